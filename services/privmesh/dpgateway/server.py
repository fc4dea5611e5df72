"""Assembles the dp-gateway from its settings: the definition `python -m privmesh.dpgateway` runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from privmesh.dpgateway.allocator import retain_freed_memory
from privmesh.dpgateway.datasets import DatasetStore, now_us
from privmesh.dpgateway.gateway_service import GatewayService, Limits
from privmesh.dpgateway.ledger import Ledger
from privmesh.dpgateway.servicer import DPGatewayServicer
from privmesh.dpgateway.settings import DPGatewaySettings
from privmesh.dpgateway.source import SourceReader
from privmesh.dpgateway.spark_engine import shared_process
from privmesh.dpgateway.v1 import dpgateway_pb2, dpgateway_pb2_grpc
from privmesh.runtime.db import Database
from privmesh.runtime.server import Registration, Runtime, ServiceDefinition

SERVICE_NAME = dpgateway_pb2.DESCRIPTOR.services_by_name["DPGateway"].full_name


async def build(runtime: Runtime, settings: DPGatewaySettings) -> Sequence[Registration]:
    retain_freed_memory(settings.retain_freed_memory_mb)
    db = Database(settings.database)
    runtime.on_close.append(db.close)
    ledger = Ledger(db)
    charged = await asyncio.to_thread(ledger.recover_stale, now_us() - settings.stale_reservation_seconds * 1_000_000)
    if charged:
        await runtime.audit.append("RecoverReservations", details={"charged_in_full": str(charged)})
    spark = (shared_process(settings.spark_python, settings.spark_master, tuple(sorted(settings.spark_conf.items())))
             if settings.spark_python else None)
    limits = Limits(settings.max_epsilon_per_query, settings.max_rho_per_query, settings.max_delta_per_query)
    service = GatewayService(DatasetStore(db), ledger,
                             SourceReader(settings.cache_dir, settings.s3_endpoint_url, settings.s3_region),
                             runtime.audit, limits, runtime.authorizer.require, spark)
    servicer = DPGatewayServicer(service, runtime.authorizer)

    def register(server: grpc.aio.Server) -> None:
        dpgateway_pb2_grpc.add_DPGatewayServicer_to_server(servicer, server)

    return [Registration(SERVICE_NAME, register)]


DEFINITION = ServiceDefinition("dp-gateway", "dpgateway.privmesh.dev", DPGatewaySettings, build)
