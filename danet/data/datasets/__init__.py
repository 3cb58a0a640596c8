"""One module per data set: class names, palette, preparation of the official download, and a synthetic copy
of its layout (for the tests: every preparation and preset runs end to end without a download)."""
