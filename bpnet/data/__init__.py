"""Data: COCO reading, dataset_convert, the TFRecord schema, masks and the demo dataset."""
