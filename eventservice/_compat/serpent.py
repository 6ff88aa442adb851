"""serpent beyond its documented API. Tested with serpent 1.41 and 1.43.

serpent documents ``register_class`` and ``unregister_class`` but no way to ask which types it
encodes as values. Typed events (:mod:`eventservice.typed`) ask, to refuse before sending a
value the service could not decode; this module answers, relying on:

- ``serpent.Serializer.dispatch``: a dict keyed by the types serpent encodes itself
  (:func:`dispatched_types`);
- ``serpent._special_classes_registry``: a dict keyed by the classes given to
  ``register_class``, and those serpent registers itself (:func:`special_classes`).

When serpent no longer has one of them, :func:`dispatched_types` answers None (the caller
cannot tell) and :func:`special_classes` an empty tuple; ``tests/test_compat.py`` fails then.
"""

from __future__ import annotations

from typing import Collection, Optional, Tuple

import serpent

TESTED_VERSIONS = ("1.41", "1.43")


def dispatched_types() -> Optional[Collection[type]]:
    """The types serpent's ``Serializer`` encodes by itself (a live view), or None."""
    return getattr(serpent.Serializer, "dispatch", None)


def special_classes() -> Tuple[type, ...]:
    """The classes with a serializer of their own (``register_class``)."""
    registry = getattr(serpent, "_special_classes_registry", None)
    return tuple(registry) if registry is not None else ()
