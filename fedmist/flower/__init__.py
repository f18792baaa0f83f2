"""The only place in ``fedmist`` that knows Flower's record types: jobs <-> messages."""
