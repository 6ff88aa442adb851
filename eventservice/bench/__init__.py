"""``es bench``: measure an Event Service with every publisher and subscriber in a process of
its own.

The coordinator (:mod:`.cli`, the ``es bench`` sub-command) runs each scenario of the registry
in :mod:`.scenarios` through a :class:`.run.Run`, which starts an ``es`` and the children
(:mod:`.children`) that :mod:`.measures` and :mod:`.pubsub` ask for; each run yields a
:class:`.result.Result`, summarized and printed by :mod:`.report` (medians and latency
merging in :mod:`.stats`; CPU, threads and memory from :mod:`.procfs`).

A child plays one role: those of :mod:`.roles` use eventservice, those of
:mod:`.plain_roles` never import it (see :data:`.children.PLAIN_BOOT`); both speak the
protocol of :mod:`.child`. All processes run on one machine, so one clock serves them all.

This module imports nothing, so that importing one of the others (looplag takes :mod:`.stats`)
loads only that one and what it needs.
"""
