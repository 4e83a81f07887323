"""The engines: their contract (api), their loading, and the implementations beside them."""
