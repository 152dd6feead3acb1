"""The framework images: manifest (images.yaml), build (content-hash tags, registry-free builds), wheelhouse
(lock per Python, served wheels), ensure (build one, live), store (export/load tars for nodes that cannot
build), livestatus (the live build line)."""
