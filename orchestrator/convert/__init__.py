"""Conversions: a model exported by its source image (``predict export``) into the conversions cache, with
the record (``convert.json``) that deployment-runtime images (images.yaml ``reads:``) serve it from."""
