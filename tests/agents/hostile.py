"""Agents that misbehave the way real agent code does (issue 15), for the containment, log-write
and time-limit tests: they raise BaseExceptions, answer with unencodable strings, or hang."""

import asyncio
import sys
import time

from tests.agents.toy import cancel_o1

_RAISE = {
    "exit": lambda: sys.exit(0),
    "interrupt": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
    "genexit": lambda: (_ for _ in ()).throw(GeneratorExit()),
}


class RaisesOn:
    """Plays cancel_o1, except on task `task` where it raises `kind` (exit: sys.exit(0),
    interrupt: KeyboardInterrupt, genexit: GeneratorExit) after one tool call."""

    def __init__(self, task="refund-ask-email", kind="exit"):
        self.task, self.kind = task, kind

    def run(self, episode):
        if episode.task_id == self.task:
            episode.call("find_customer", {"email": "ada@example.com"})
            _RAISE[self.kind]()
        return cancel_o1(episode)


class AsyncRaisesOn(RaisesOn):
    """RaisesOn as an async agent: the exception is raised inside the event loop."""

    async def arun(self, episode):
        await asyncio.sleep(0)
        return RaisesOn.run(self, episode)


def surrogates(episode):
    """Arguments and an answer holding lone surrogates and a huge integer (a model's broken
    output): every one must reach the log and read back exactly."""
    episode.call("find_customer", {"email": "ada\udc80@example.com"})
    episode.log_model_turn(messages=[{"role": "user", "content": "hi \ud800"}], output={"n": 2**80, "s": {3, 1, 2}})
    episode.call("cancel_order", {"order_id": "O1"})
    return "Cancelled O1 \ud83d and \udfff."


def hangs(episode):
    """Never returns in time: a synchronous sleep (not interruptible), then a tool call that
    must no longer reach the log."""
    episode.call("find_customer", {"email": "ada@example.com"})
    time.sleep(float(getattr(episode, "hang_s", 20)))
    episode.call("cancel_order", {"order_id": "O1"})
    return "late"


class Hangs:
    def __init__(self, seconds=20):
        self.seconds = float(seconds)

    def run(self, episode):
        episode.hang_s = self.seconds
        return hangs(episode)


class Slow:
    """cancel_o1 after a pause: a run slow enough to interrupt with SIGINT mid-way."""

    def __init__(self, pause=0.2):
        self.pause = float(pause)

    def run(self, episode):
        time.sleep(self.pause)
        return cancel_o1(episode)


class _Broken:
    def __str__(self):
        raise RuntimeError("no text")

    __repr__ = __str__


def broken_objects(episode):
    """An answer and an annotation whose __str__/__repr__ raise."""
    episode.annotations["weird"] = _Broken()
    return cancel_o1(episode) and _Broken()
