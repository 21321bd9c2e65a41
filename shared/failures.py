"""What a handler raises to say how its event failed (see shared.extensions.consumer)."""


class PoisonEvent(Exception):
    """The event can never succeed (impossible values): dead-letter it at once, with this
    exception's message as the reason."""


class RetryLater(Exception):
    """The event arrived before what it depends on: retry it with backoff (counted against
    the attempts) rather than dead-lettering it. Events from different producers can
    overtake each other."""
