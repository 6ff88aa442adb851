"""What each caller of the Event Service may do when it runs with users (``es --users``).

The :class:`Gate` answers the service's remote methods, for the user the calling connection
logged in as (see :func:`eventservice.daemon.user_of`):

- **publishing and requests**: each subject must be allowed by the user's publish rules;
- **subscribing** to an exact subject: allowed by its subscribe rules; to patterns: the user
  may subscribe to something at all, and the routes then leave out, per (user, subject),
  what it may not receive (:meth:`Gate.admits`, asked once per subject when a route is
  built);
- **ownership**: a subscriber belongs to the user whose call first subscribed it, a
  work-queue group to the user whose subscribers are in it, until they hold nothing; calls
  of other users that change them are refused;
- **service-wide methods** (``stats``, ``reload``, ``replacedBy``) need an admin user.

A refusal is a built-in ``PermissionError`` whose text (:func:`eventservice.errors.denial_text`)
names the user, the action and the subject; it is counted per user and logged once per (user,
rule) per :data:`LOG_EVERY` seconds. The gate is also the :class:`~eventservice.auth.Accounts`
of the service's daemon, so a reload (a new :attr:`Gate.users`) changes both at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Hashable, Iterable, List, Optional, Set, Tuple

from Pyro5.callcontext import current_context

from .auth import Credentials
from .daemon import user_of
from .errors import denial_text
from .users import User, Users

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between two log lines of refusals by one rule of one user


class Denials:
    """Refusals counted per user, and logged at most once per (user, rule) per LOG_EVERY."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = {}
        self._logged: Dict[Tuple[str, str], float] = {}

    def refuse(self, user: str, action: str, subject: str, why: str) -> PermissionError:
        """Count and maybe log a refusal; the error to raise."""
        now = time.monotonic()
        with self._lock:
            self.counts[user] = self.counts.get(user, 0) + 1
            last = self._logged.get((user, why))
            tell = last is None or now - last >= LOG_EVERY
            if tell:
                self._logged[(user, why)] = now
        text = denial_text(user, action, subject, why)
        if tell:
            log.warning("%s (logged once a minute per user and rule)", text)
        return PermissionError(text)

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)


class Gate:
    """The checks and the ownership records of a service with users (see the module).
    ``claim`` and ``release`` are called under the service's lock for subscription changes."""

    def __init__(self, users: Users) -> None:
        self.users = users  # replaced whole by a reload
        self.denials = Denials()
        self._owners: Dict[Hashable, str] = {}  # subscriber key -> user name
        self._members: Dict[str, Set[str]] = {}  # work-queue group -> keys of its members
        self._groups_of: Dict[str, Set[str]] = {}  # key -> groups it joined

    # -- accounts of the daemon ----------------------------------------------------------
    def password_of(self, user: str) -> Optional[str]:
        return self.users.password_of(user)

    def user_of_cert(self, common_name: str) -> Optional[str]:
        return self.users.user_of_cert(common_name)

    # -- who calls ------------------------------------------------------------------------
    def caller(self) -> User:
        """The user of the connection making the current remote call (a user no longer in
        the file may do nothing)."""
        name = user_of(current_context.client) or ""
        return self.user(name)

    def user(self, name: str) -> User:
        """The user ``name`` as the file says now; one without rules when it is not there."""
        return self.users.get(name) or User.without_rights(name)

    def credentials(self, name: str) -> Credentials:
        """What the service proves to the daemon of a subscriber of user ``name``."""
        return Credentials(self.users.password_of(name), name)

    # -- checks -----------------------------------------------------------------------------
    def check_publish(self, subjects: Iterable[str]) -> None:
        """PermissionError unless the caller may publish on every one of ``subjects``."""
        user = self.caller()
        refusal = user.publish.refusal
        for subject in subjects:
            why = refusal(subject)
            if why is not None:
                raise self.denials.refuse(user.name, "publish", subject, why)

    def check_subscribe(self, subjects: Iterable[str]) -> User:
        """The caller, if it may subscribe to every one of the exact ``subjects``."""
        user = self.caller()
        for subject in subjects:
            why = user.subscribe.refusal(subject)
            if why is not None:
                raise self.denials.refuse(user.name, "subscribe", subject, why)
        return user

    def check_match(self, patterns: List[str]) -> User:
        """The caller, if it may subscribe to anything at all (then it gets, of what its
        patterns match, what its rules allow)."""
        user = self.caller()
        if patterns and not user.subscribes_at_all:
            raise self.denials.refuse(user.name, "subscribe", patterns[0], f"user {user.name!r} may subscribe "
                                                                          "to nothing")
        return user

    def check_admin(self, method: str) -> None:
        """PermissionError unless the caller is an admin."""
        user = self.caller()
        if not user.admin:
            raise self.denials.refuse(user.name, "call", method, "only admin users may")

    def check_owner(self, user: User, key: str, action: str) -> None:
        """PermissionError when subscriber ``key`` belongs to another user."""
        owner = self._owners.get(key)
        if owner is not None and owner != user.name:
            raise self.denials.refuse(user.name, action, str(key), f"the subscriber belongs to user {owner!r}")

    # -- ownership ------------------------------------------------------------------------
    def claim(self, user: User, key: str, group: Optional[str]) -> None:
        """Make ``user`` the owner of subscriber ``key`` (and of ``group``, joined by it);
        PermissionError when either belongs to another user."""
        self.check_owner(user, key, "change")
        if group is not None:
            owner = self.group_owner(group)
            if owner is not None and owner != user.name:
                raise self.denials.refuse(user.name, "join", group, f"the work-queue group belongs to user {owner!r}")
            self._members.setdefault(group, set()).add(key)
            self._groups_of.setdefault(key, set()).add(group)
        self._owners[key] = user.name

    def group_owner(self, group: str) -> Optional[str]:
        """The user whose subscribers are in ``group``, or None."""
        for key in self._members.get(group, ()):
            return self._owners.get(key)
        return None

    def owner_of(self, key: str) -> Optional[str]:
        """The user subscriber ``key`` belongs to, or None."""
        return self._owners.get(key)

    def release(self, key: str) -> None:
        """Subscriber ``key`` holds nothing any more: it and its groups belong to nobody."""
        self._owners.pop(key, None)
        for group in self._groups_of.pop(key, ()):
            members = self._members.get(group)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._members[group]

    def owned(self) -> List[Tuple[str, str]]:
        """(subscriber key, owner) of every owned subscriber."""
        return [(str(key), owner) for key, owner in self._owners.items()]

    # -- routes ---------------------------------------------------------------------------
    def admits(self, key: Hashable, subject: str) -> bool:
        """Whether subscriber ``key`` may receive events on ``subject`` (asked when a route
        is built, so once per subject and route; each user remembers its decisions)."""
        owner = self._owners.get(key)
        user = self.users.get(owner)
        return user is not None and user.subscribe.refusal(subject) is None
