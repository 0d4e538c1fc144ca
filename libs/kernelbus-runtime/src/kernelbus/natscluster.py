"""A local N-node NATS/JetStream cluster: routes on loopback, distinct ports and store dirs
(tests, benchmarks; `make run` with KERNELBUS_NATS_NODES=3 is issue 14 part 4, not done)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kernelbus import natsserver
from kernelbus.natsserver import NatsServer


@dataclass
class NatsCluster:
    nodes: list[NatsServer]
    name: str

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (what services take as NATS_URL)."""
        return ",".join(node.url for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(root: Path, size: int = 3, name: str = "kernelbus") -> NatsCluster:
    """Start `size` nodes under `root/node-<i>`; returns once every node listens (the
    JetStream meta leader is elected shortly after: clients retry until it is)."""
    client_ports = [natsserver.free_port() for _ in range(size)]
    route_ports = [natsserver.free_port() for _ in range(size)]
    routes = ", ".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    nodes: list[NatsServer] = []
    try:
        for i in range(size):
            extra = (
                f'server_name: "{name}-{i}"\n'
                f"cluster {{\n  name: {name}\n  listen: 127.0.0.1:{route_ports[i]}\n"
                f"  routes: [{routes}]\n}}\n"
            )
            nodes.append(
                natsserver.start(
                    root / f"node-{i}",
                    port=client_ports[i],
                    extra_config=extra,
                    log_file=root / f"node-{i}.log",
                )
            )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return NatsCluster(nodes, name)
