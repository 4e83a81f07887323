"""The chat pipeline: a session, its turns, the sentences cut from a reply, the queue for the model."""
