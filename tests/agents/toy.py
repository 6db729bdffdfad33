"""Small python agents used by the tests through the real `python` adapter."""

import asyncio
import os
import time
from pathlib import Path

from bench.errors import InfraError


def cancel_o1(episode):
    episode.call("find_customer", {"email": "ada@example.com"})
    episode.call("cancel_order", {"order_id": "O1"})
    return "Cancelled O1."


def cancel_o3(episode):
    episode.call("cancel_order", {"order_id": "O3"})
    return "done"


async def async_cancel_o1(episode):
    await asyncio.sleep(0)
    episode.call("cancel_order", {"order_id": "O1"})
    return "Cancelled O1."


class Looper:
    """Calls a read tool forever: must be stopped by the step budget."""

    def __init__(self, tool="list_orders"):
        self.tool = tool

    def run(self, episode):
        while True:
            episode.call(self.tool, {"customer_id": "C1"})


def sleeper(episode):
    episode.call("cancel_order", {"order_id": "O1"})
    time.sleep(3)
    episode.call("list_orders", {"customer_id": "C1"})
    return "O1"


def crasher(episode):
    episode.call("cancel_order", {"order_id": "O1"})
    raise ZeroDivisionError("agent bug")


class Flaky:
    """Raises an infrastructure error on its first `failures` attempts of each trial."""

    def __init__(self, failures=1):
        self.failures = int(failures)
        self.seen = {}

    def run(self, episode):
        n = self.seen.get(episode.trial_id, 0)
        self.seen[episode.trial_id] = n + 1
        if n < self.failures:
            episode.call("list_orders", {"customer_id": "C1"})
            raise InfraError("endpoint returned 503")
        return cancel_o1(episode)


def seed_echo(episode):
    episode.call("list_orders", {"customer_id": f"C{episode.seed % 7}"})
    return ""


class DiesOnce:
    """Kills its own process in the first trial it plays (marker file absent), then plays
    cancel_o1: a worker dying mid-trial, for the Ray executor's retry test."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def run(self, episode):
        episode.call("find_customer", {"email": "ada@example.com"})
        if not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        return cancel_o1(episode)


class DiesOn:
    """Kills its own process whenever it plays `task` (every time: a worker that keeps dying),
    and plays cancel_o1 elsewhere — for the Ray executor's infrastructure-error test."""

    def __init__(self, task):
        self.task = task

    def run(self, episode):
        if episode.task_id == self.task:
            os._exit(1)
        return cancel_o1(episode)


def napper(episode):
    """cancel_o1 after a short nap: trials slow enough to kill a run in the middle."""
    time.sleep(0.3)
    return cancel_o1(episode)
