"""Fuzz targets: each module has ``fuzz_one(data: bytes)`` and ``main(seconds)`` (``make fuzz``)."""
