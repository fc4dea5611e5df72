"""The ServerApp's side of FLRunReporter: round reports and model uploads to the coordinator over mTLS.

The ServerApp runs in a process spawned by the coordinator's SuperLink and inherits the coordinator's
environment; REPORT_ENV names where to report and the credentials to use. Without it (a bare Flower run, as in
the benchmark's baseline) nothing is reported.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from privmesh.fl.v1 import fl_pb2, reporter_pb2, reporter_pb2_grpc
from privmesh.runtime.client import pinned_options
from privmesh.runtime.identity import own_principal
from privmesh.runtime.tls import channel_credentials

REPORT_ENV = ("PRIVMESH_FL_REPORT_TARGET", "PRIVMESH_FL_REPORT_CA", "PRIVMESH_FL_REPORT_CERT",
              "PRIVMESH_FL_REPORT_KEY")
CHUNK = 1024 * 1024
CALL_TIMEOUT = 60.0


def encode_arrays(names: Sequence[str], arrays: Sequence[npt.NDArray[np.float64]]
                  ) -> tuple[list[fl_pb2.TensorInfo], bytes]:
    """The tensors' NPY encodings, concatenated, and their descriptions (the DECRYPTED model format)."""
    infos, parts = [], []
    for name, array in zip(names, arrays, strict=True):
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        data = buffer.getvalue()
        infos.append(fl_pb2.TensorInfo(name=name, shape=list(array.shape), dtype=str(array.dtype),
                                       size_bytes=len(data)))
        parts.append(data)
    return infos, b"".join(parts)


def decode_arrays(infos: Sequence[fl_pb2.TensorInfo], data: bytes) -> list[npt.NDArray[np.float64]]:
    arrays, offset = [], 0
    for info in infos:
        arrays.append(np.load(io.BytesIO(data[offset:offset + info.size_bytes]), allow_pickle=False))
        offset += info.size_bytes
    return arrays


class Reporter:
    def __init__(self, run: str, target: str, ca: Path, cert: Path, key: Path) -> None:
        self.run = run
        # The coordinator reports to itself: it must present the very identity this ServerApp was given.
        self._channel = grpc.secure_channel(target, channel_credentials(ca, cert, key),
                                            options=pinned_options(target, own_principal(cert)))
        self._stub = reporter_pb2_grpc.FLRunReporterStub(self._channel)

    @classmethod
    def from_environment(cls, run: str) -> Reporter | None:
        values = [os.environ.get(name, "") for name in REPORT_ENV]
        if not run or not all(values):
            return None
        return cls(run, values[0], Path(values[1]), Path(values[2]), Path(values[3]))

    def _report(self, **report: object) -> bool:
        reply = self._stub.ReportRun(reporter_pb2.ReportRunRequest(run=self.run, **report),  # type: ignore[arg-type]
                                     timeout=CALL_TIMEOUT)
        return bool(reply.stop_requested)

    def round_started(self, round_number: int, node_ids: Sequence[int]) -> bool:
        """Whether the coordinator asks the run to stop instead."""
        return self._report(round_start=reporter_pb2.ReportedRoundStart(round=round_number,
                                                                        selected_node_ids=list(node_ids)))

    def round_ended(self, metrics: fl_pb2.RoundMetrics, completed: Sequence[int], dropped: Sequence[int]) -> bool:
        return self._report(round_end=reporter_pb2.ReportedRoundEnd(
            metrics=metrics, completed_node_ids=list(completed), dropped_node_ids=list(dropped)))

    def run_ended(self, reason: int, message: str) -> None:
        self._report(run_end=reporter_pb2.ReportedRunEnd(end_reason=reason, message=message))  # type: ignore[arg-type]

    def upload(self, round_number: int, names: Sequence[str], arrays: Sequence[npt.NDArray[np.float64]]) -> None:
        infos, data = encode_arrays(names, arrays)

        def messages() -> Iterator[reporter_pb2.UploadModelRequest]:
            yield reporter_pb2.UploadModelRequest(header=reporter_pb2.UploadedModelHeader(
                run=self.run, round=round_number, tensors=infos, size_bytes=len(data)))
            for start in range(0, len(data), CHUNK):
                yield reporter_pb2.UploadModelRequest(chunk=data[start:start + CHUNK])

        self._stub.UploadModel(messages(), timeout=CALL_TIMEOUT)

    def close(self) -> None:
        self._channel.close()
