"""The models a server serves: those of its configuration (loaded at start-up) and those registered at run
time with CreateModel (persisted, so every replica and every restart sees them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from privmesh.fhe.model import InvalidModel, ModelSpec, load_model
from privmesh.fhe.store import ModelStore, now_us


class TestModelsDisabled(Exception):
    """A model without a security level, on a server that serves production models only."""


@dataclass(frozen=True)
class RegisteredModel:
    spec: ModelSpec
    create_us: int


class ModelRegistry:
    def __init__(self, store: ModelStore, allow_test_models: bool) -> None:
        self.store = store
        self.allow_test_models = allow_test_models
        self._models: dict[str, RegisteredModel] = {}

    def _admit(self, model_id: str, model_file: bytes, create_us: int) -> RegisteredModel:
        spec = load_model(model_id, model_file)
        if not spec.params.is_production and not self.allow_test_models:
            raise TestModelsDisabled
        return RegisteredModel(spec, create_us)

    def load_configured(self, paths: tuple[Path, ...]) -> None:
        """Start-up: the configured model files and the stored run-time models (an invalid file stops the start)."""
        for path in paths:
            model_id = Path(path).name.removesuffix(".json")
            try:
                self._models[model_id] = self._admit(model_id, Path(path).read_bytes(), now_us())
            except InvalidModel as exc:
                raise ValueError(f"model file {path}: {exc}") from None
            except TestModelsDisabled:
                raise ValueError(f"model file {path}: HEStd_NotSet models need allow_test_models") from None
        for model_id, model_file, created in self.store.all():
            self._models.setdefault(model_id, self._admit(model_id, model_file, created))

    async def get(self, model_id: str) -> RegisteredModel | None:
        found = self._models.get(model_id)
        if found is None:  # registered on another replica since this one started
            stored = await asyncio.to_thread(self.store.get, model_id)
            if stored is not None:
                found = await asyncio.to_thread(self._admit, model_id, *stored)
                self._models[model_id] = found
        return found

    def list(self, after: str, limit: int, kind: str | None) -> list[RegisteredModel]:
        return [self._models[m] for m in sorted(self._models)
                if m > after and (kind is None or self._models[m].spec.kind == kind)][:limit]

    async def create(self, model_id: str, model_file: bytes) -> RegisteredModel | None:
        """The new model, or None when the id is taken; InvalidModel / TestModelsDisabled when refused."""
        if model_id in self._models:
            return None
        created = now_us()
        model = await asyncio.to_thread(self._admit, model_id, model_file, created)
        if not await asyncio.to_thread(self.store.add, model_id, model_file, created):
            return None
        self._models[model_id] = model
        return model

    async def delete(self, model_id: str) -> bool:
        found = self._models.pop(model_id, None)
        await asyncio.to_thread(self.store.delete, model_id)
        return found is not None
