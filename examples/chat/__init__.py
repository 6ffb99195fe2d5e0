"""
A chat-room processor for echoplus: see L{examples.chat.rooms} and
docs/shared-state.md.
"""
