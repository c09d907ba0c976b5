"""KFP components: one module per sub-task, each a thin adapter over ``bpnet``.

Each module defines one plain function with a typed KFP signature whose body imports
``components.runtime`` and calls it once. ``component()`` turns it into a lightweight Python
component on the project image: kfp.local's SubprocessRunner can run those (it runs no container
components), and on a cluster each still runs in its own pod of that image, which already holds
kfp and bpnet (hence ``install_kfp_package=False``: nothing is pip-installed at run time).
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl


def component(func: Callable, image: str) -> Callable:
    """``func`` as a KFP component running on ``image`` (chosen per run spec at compile time)."""
    return dsl.component(func, base_image=image, install_kfp_package=False)
