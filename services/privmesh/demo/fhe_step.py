"""Step 4 of the scenario: the hospitals' risk model is served on encrypted features by fhe-inference.

The model is step 3's (fl-coordinator leaves it in ctx.facts["risk_model"]: feature names, weights, bias of a
logistic regression over records.scaled_features); without step 3 one is trained here with scikit-learn on
the same synthetic patients. The operator registers it (CreateModel: 128-bit security, ring 2^14 — the
smallest secure ring for the circuit's depth 5 — with a degree-7 sigmoid on an interval covering every
possible logit). A clinician's client generates its keys, uploads only the public and evaluation keys,
encrypts patients' features, and decrypts the scores locally; the server sees ciphertexts only, and audits
each inference with the model, the session and the number of patients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from privmesh.demo import records
from privmesh.demo.context import DemoContext, expect
from privmesh.fhe.client import ClientKeys, infer, register_keys
from privmesh.fhe.model import model_file
from privmesh.fhe.v1 import fhe_pb2 as pb
from privmesh.fhe.v1 import fhe_pb2_grpc
from privmesh.runtime.client import secure_channel
from privmesh.runtime.errors import read_error

MODEL_ID = "patient-risk"


def _train(patients: list[records.Patient]) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    features = np.array([records.scaled_features(p) for p in patients])
    labels = np.array([p.high_risk for p in patients])
    fitted = LogisticRegression().fit(features, labels)
    return {"features": list(records.FEATURES), "weights": fitted.coef_[0].tolist(),
            "bias": float(fitted.intercept_[0])}


def _model_file(risk: dict[str, Any]) -> bytes:
    reach = sum(abs(w) for w in risk["weights"]) + abs(risk["bias"])  # |logit| for features in [-1, 1]
    bound = float(max(4, math.ceil(reach)))
    return model_file("logistic_regression", weights=risk["weights"], bias=risk["bias"], features=risk["features"],
                      sigmoid={"degree": 7, "interval": [-bound, bound]}, display_name="Patient risk",
                      description="logistic regression over the scaled vital signs", outputs=["risk_probability"])


async def encrypted_scoring_step(ctx: DemoContext) -> None:
    target = ctx.targets["fhe-inference"]
    patients = records.patients(300)
    risk = ctx.facts.get("risk_model")
    if isinstance(risk, dict):
        ctx.console.print("   serving the model trained by the hospitals in step 3")
    else:
        risk = _train(patients)
        ctx.console.print("   (no step-3 model: trained a logistic regression with scikit-learn on 300 patients)")
    async with secure_channel(target, ctx.layout.identity("admin"), timeout_seconds=120,
                              peer=ctx.peers["fhe-inference"]) as admin_channel:
        admin = fhe_pb2_grpc.FHEInferenceStub(admin_channel)
        try:
            await admin.DeleteModel(pb.DeleteModelRequest(name=f"models/{MODEL_ID}"))  # a rerun replaces it
        except Exception as exc:
            expect(read_error(exc).reason == "MODEL_NOT_FOUND", f"could not replace the model: {exc}")  # type: ignore[arg-type]
        model = (await admin.CreateModel(pb.CreateModelRequest(model_id=MODEL_ID,
                                                               model_file=_model_file(risk)))).model
    params = model.parameters
    ctx.console.print(f"   operator registered models/{MODEL_ID}: ring 2^{params.ring_dimension.bit_length() - 1}, "
                      f"depth {params.multiplicative_depth}, 128-bit security, sigmoid of degree 7 on "
                      f"[{model.logistic_regression.sigmoid.interval_min:g}, "
                      f"{model.logistic_regression.sigmoid.interval_max:g}], "
                      f"{model.input_packing.samples_per_ciphertext} patients per ciphertext")
    async with secure_channel(target, ctx.layout.identity("demo-client"), timeout_seconds=120,
                              peer=ctx.peers["fhe-inference"]) as channel:
        stub = fhe_pb2_grpc.FHEInferenceStub(channel)
        keys = ClientKeys.generate(model)
        session = await register_keys(stub, keys)
        uploaded = sum(p.size_bytes for p in session.key_parts) / 1e6
        ctx.console.print(f"   client uploaded its public and evaluation keys ({uploaded:.1f} MB in 1 MiB chunks); "
                          f"the secret key stays here; {session.name}")
        raw = np.array([records.scaled_features(p) for p in patients])
        scores = (await infer(stub, session.name, keys, raw))[:, 0]
        logits = raw @ np.array(risk["weights"]) + risk["bias"]
        exact = 1.0 / (1.0 + np.exp(-logits))
        error = float(np.max(np.abs(scores - exact)))
        first = patients[0]
        ctx.console.print(f"   patient {first.patient_id}: decrypted risk {scores[0]:.3f} (plaintext model "
                          f"{exact[0]:.3f}); {len(patients)} patients scored, max |difference| {error:.4f}")
        bound = model.logistic_regression.sigmoid.max_abs_error + model.tolerance
        expect(error <= bound, f"encrypted scores differ from the plaintext model by {error:.4f} > {bound:.4f}")
        stored = (await stub.GetSession(pb.GetSessionRequest(name=session.name))).session
        expect(stored.inference_count == math.ceil(len(patients) / model.input_packing.samples_per_ciphertext),
               "not every inference was recorded")
        await stub.DeleteSession(pb.DeleteSessionRequest(name=session.name))
        ctx.console.print(f"   {stored.inference_count} encrypted inference(s) audited (model, session, patient "
                          "count only); session deleted with its keys")
    ctx.facts["fhe_model"] = model.name
