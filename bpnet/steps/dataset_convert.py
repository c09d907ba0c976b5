"""dataset_convert: a COCO keypoint dataset -> sharded TFRecords (+ loss masks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpnet.data.convert import ConvertError, ConvertSummary, convert_dataset
from bpnet.errors import DataError, UsageError
from bpnet.lock import exclusive
from bpnet.settings import ConvertSettings
from bpnet.specs import DatasetSpec
from bpnet.steps._common import output_dir


@dataclass(frozen=True)
class Converted:
    output: Path  # the shards' prefix: <output>-fold-NNN-of-NNN, <output>-manifest.json
    summary: ConvertSummary

    @property
    def samples(self) -> int:
        return self.summary.samples_written

    @property
    def images(self) -> int:
        return self.summary.images_written


def dataset_convert(spec: DatasetSpec, output: str | Path, settings: ConvertSettings) -> Converted:
    """Convert the split ``settings.mode`` names; nothing is written if the data has problems.
    ``output`` is a prefix (``dir/train``), not a folder; one convert at a time writes it."""
    if str(output).endswith(("/", "\\")) or Path(output).is_dir():
        raise UsageError(f"{output} — is a folder; the output is a prefix of the shards' names, e.g. "
                         f"{str(output).rstrip('/')}/train", field="output_filename")
    output = Path(output)
    output_dir("output_filename", output.parent)
    try:
        with exclusive(output, "bpnet dataset_convert"):
            summary = convert_dataset(spec, output, settings)
    except ConvertError as exc:
        # --skip_invalid skips images and annotations; a problem of the whole dataset it cannot skip
        skippable = all(p.image_id is not None or p.annotation_id is not None for p in exc.problems)
        hint = " or pass --skip_invalid to skip and count it" if skippable and not settings.skip_invalid else ""
        raise DataError(f"{exc}\nnothing was written; fix the data{hint}") from exc
    return Converted(output, summary)
