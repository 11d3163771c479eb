# Module-level state of the chat package (see __init__.py).
ROOMS = {}
ONLINE = set()
BANNER = "welcome"
