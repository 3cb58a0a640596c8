"""One module per data set: class names, palette, preparation of the official download, and a synthetic copy of its layout."""  # noqa: E501
