"""A throwaway RabbitMQ cluster of three nodes, from the server installed on this machine.

Each node has its own node name, AMQP and distribution ports, and data and
log directories (owned by `rabbitmq`, under /tmp); they share the machine's
Erlang cookie, as the nodes of one cluster must. The second and third join
the first with `rabbitmqctl join_cluster`. The shared node (rabbit@<host> on
5672) is never named, so never touched.

Partitions are handled as production clusters should handle them:
`pause_minority`, so a node cut off from the others stops serving clients
(they fail over) instead of serving a stale minority, and rejoins by itself
once it sees the others again.

A partition is made without a firewall (this machine has neither iptables
nor nftables): the cut-off node and the others are given wrong cookies for
each other (each side a different one) and their distribution links are
dropped, so every handshake between them is refused in both directions until
the cookies are set back.
"""

from __future__ import annotations

import subprocess
import threading
import uuid

from tests.support import stack
from tests.support.throwaway import ThrowawayRabbit

CLUSTER_CONFIG = "cluster_partition_handling = pause_minority\n"


class RabbitCluster:
    """Three clustered RabbitMQ nodes of their own; `url_from(i)` lists them starting at node i."""

    def __init__(self, size: int = 3) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.nodes = [
            ThrowawayRabbit(
                f"cluster{suffix}{letter}",
                stack.free_port(),
                stack.free_port(),
                config=CLUSTER_CONFIG,
            )
            for letter in "abcdefg"[:size]
        ]
        # The nodes `partition` cut off and `heal` has not mended yet.
        self.cut_off: list[ThrowawayRabbit] = []

    def url_from(self, first: int) -> str:
        """Every node's URL, `;`-separated, starting at node `first` (the preferred node)."""
        ordered = self.nodes[first:] + self.nodes[:first]
        return ";".join(node.url for node in ordered)

    def start(self) -> None:
        """Start every node at once, then join the others to the first, one at a time.

        `join_cluster` resets the node it joins (a fresh node has nothing to lose).
        """
        _each(self.nodes, ThrowawayRabbit.start)
        seed = self.nodes[0]
        _each(self.nodes[1:], lambda node: node.ctl("stop_app"))
        for node in self.nodes[1:]:
            node.ctl("join_cluster", seed.node)
            node.ctl("start_app")
        _each(self.nodes, lambda node: node.ctl("await_startup", "--timeout", "60", timeout_s=90))
        running = seed.ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        assert running == str(len(self.nodes)), f"{running} of {len(self.nodes)} nodes running"

    def remove(self) -> None:
        for node in list(self.cut_off):
            self.heal(node)
        _each(self.nodes, ThrowawayRabbit.remove)

    def leaders(self) -> dict[str, str]:
        """Each quorum queue's leader node, by queue name."""
        for node in self.nodes:
            try:
                out = node.ctl("list_queues", "-q", "--no-table-headers", "name", "type", "leader")
            except RuntimeError:
                continue
            rows = [line.split("\t") for line in out.splitlines() if line.strip()]
            return {row[0]: row[2] for row in rows if len(row) == 3 and row[1] == "quorum"}
        raise RuntimeError("no node of the cluster answered list_queues")

    def members(self) -> dict[str, str]:
        """Each queue's type and members as rabbitmqctl shows them, by queue name."""
        out = self.nodes[0].ctl(
            "list_queues", "-q", "--no-table-headers", "name", "type", "members"
        )
        rows = [line.split("\t", 1) for line in out.splitlines() if line.strip()]
        return {row[0]: row[1] for row in rows if len(row) == 2}

    def node_named(self, node_name: str) -> ThrowawayRabbit:
        return next(node for node in self.nodes if node.node == node_name)

    def wait_not_quorum_critical(self, node: ThrowawayRabbit, timeout_s: float = 120) -> None:
        """Wait until stopping `node` would leave every quorum queue a majority of its replicas."""

        def safe() -> bool:
            probe = subprocess.run(
                ["rabbitmq-queues", "-n", node.node, "check_if_node_is_quorum_critical"],
                env=node.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            return probe.returncode == 0

        stack.wait_until(safe, timeout_s, f"{node.node} not to be quorum critical", 0.25)

    def partition(self, cut_off: ThrowawayRabbit) -> None:
        """Cut `cut_off` from the other nodes: each refuses the other's distribution handshake."""
        others = [node for node in self.nodes if node is not cut_off]
        self.cut_off.append(cut_off)
        cut_off.ctl("eval", _cut(others))
        for node in others:
            node.ctl("eval", _cut([cut_off]))

    def heal(self, cut_off: ThrowawayRabbit) -> None:
        """Give the nodes their cookies back; the paused node sees the others and resumes."""
        others = [node for node in self.nodes if node is not cut_off]
        mended = True
        for node in self.nodes:
            # A node that is down has nothing to mend (`remove` tries again).
            try:
                node.ctl("eval", _mend(others if node is cut_off else [cut_off]), timeout_s=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                mended = False
        if mended and cut_off in self.cut_off:
            self.cut_off.remove(cut_off)

    def wait_paused(self, node: ThrowawayRabbit, timeout_s: float = 60) -> None:
        """Wait until `node` has paused itself (pause_minority): RabbitMQ stopped, the VM up."""

        def paused() -> bool:
            try:
                return node.ctl("eval", "rabbit:is_running().", timeout_s=20).strip() == "false"
            except (RuntimeError, subprocess.TimeoutExpired):
                return False

        stack.wait_until(paused, timeout_s, f"{node.node} to pause", 0.25)

    def wait_running(self, timeout_s: float = 180) -> None:
        """Wait until every node runs RabbitMQ and sees every other (none paused or down)."""

        def all_running() -> bool:
            for node in self.nodes:
                try:
                    running = node.ctl("eval", "length(rabbit_nodes:all_running()).", timeout_s=20)
                except (RuntimeError, subprocess.TimeoutExpired):
                    return False
                if running.strip() != str(len(self.nodes)):
                    return False
            return True

        stack.wait_until(all_running, timeout_s, "every node of the cluster to run", 0.25)


def _names(nodes: list[ThrowawayRabbit]) -> str:
    """An Erlang list of the nodes' names."""
    return "[" + ", ".join(f"'{node.node}'" for node in nodes) + "]"


def _cut(peers: list[ThrowawayRabbit]) -> str:
    return (
        # A cookie of this node's own making: were both sides given the same
        # wrong cookie, their handshake would pass.
        'Wrong = list_to_atom("cut-off-by-" ++ atom_to_list(node())), '
        "[begin erlang:set_cookie(N, Wrong), erlang:disconnect_node(N) end "
        f"|| N <- {_names(peers)}], ok."
    )


def _mend(peers: list[ThrowawayRabbit]) -> str:
    return (
        "[begin erlang:set_cookie(N, erlang:get_cookie()), net_adm:ping(N) end "
        f"|| N <- {_names(peers)}], ok."
    )


def _each(nodes: list[ThrowawayRabbit], action: object) -> None:
    """Run `action(node)` for every node at once (a node takes seconds to start or stop)."""
    errors: list[BaseException] = []

    def run(node: ThrowawayRabbit) -> None:
        try:
            action(node)  # type: ignore[operator]
        except BaseException as error:  # reported below, for every node
            errors.append(error)

    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
