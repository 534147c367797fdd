"""``python -m data_retrieval.client``: the async client of the retrieval service."""
