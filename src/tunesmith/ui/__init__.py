"""``tunesmith ui``: the whole workflow in a browser, over the same schema and run directories as the CLI."""
