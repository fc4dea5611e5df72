"""The resources each method touches, read from its contract (the `authorization` method option of
privmesh.common.v1), and the resource names a request or a reply item yields under them.

Templates: "datasets/{dataset_id}", "{parent}/fields/{items.field}", "{dataset?}:analysts". A field path through
a repeated field yields one name per element; "?" marks an optional field (empty: no name). Conditions ("when"):
"field=NAME|NAME" or "field!=@caller".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from privmesh.common.v1 import common_pb2

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.]*)(\??)\}")
_WHEN = re.compile(r"^([a-z_][a-z0-9_.]*)(=|!=)(@caller|[A-Za-z0-9_*.:/|-]+)$")
CALLER = "@caller"


class DeclarationError(ValueError):
    """A method has no authorization declaration, or one that does not fit its messages."""


@dataclass(frozen=True)
class Template:
    """One declared resource: a name template and the condition under which it applies."""

    text: str
    parts: tuple[str | tuple[str, bool], ...]  # literal text, or (field path, optional)
    when: tuple[str, str, frozenset[str]] | None  # (field path, "=" or "!=", values)

    @classmethod
    def parse(cls, access: common_pb2.ResourceAccess, message: Descriptor | None) -> Template:
        """`message`: the request or item type its paths read; None for a resolved resource (stored state)."""
        parts: list[str | tuple[str, bool]] = []
        position = 0
        for found in _PLACEHOLDER.finditer(access.template):
            parts.append(access.template[position:found.start()])
            if message is not None:
                _check_path(message, found.group(1), access.template)
            parts.append((found.group(1), found.group(2) == "?"))
            position = found.end()
        parts.append(access.template[position:])
        if not access.template or any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
            raise DeclarationError(f"{access.template!r}: not a resource template")
        when = None
        if access.when:
            matched = _WHEN.match(access.when)
            if matched is None or (matched.group(2) == "!=") != (matched.group(3) == CALLER):
                raise DeclarationError(f"{access.when!r}: 'field=NAME|NAME' or 'field!=@caller'")
            if message is None:
                raise DeclarationError(f"{access.when!r}: a resolved resource has no condition")
            _check_path(message, matched.group(1), access.when)
            when = (matched.group(1), matched.group(2), frozenset(matched.group(3).split("|")))
        return cls(access.template, tuple(p for p in parts if p != ""), when)

    def applies(self, message: Message, caller: str) -> bool:
        if self.when is None:
            return True
        path, operator, values = self.when
        found = field_values(message, path)
        if operator == "!=":
            return any(v and v != caller for v in found)
        return any(v in values for v in found)

    def names(self, message: Message) -> list[str]:
        """The resource names this template yields for `message` (none when an optional field is empty)."""
        choices: list[list[str]] = []
        for part in self.parts:
            if isinstance(part, str):
                choices.append([part])
                continue
            values = list(dict.fromkeys(field_values(message, part[0])))
            if part[1] and not any(values):
                return []
            choices.append(values)
        return ["".join(combination) for combination in itertools.product(*choices)]


def _check_path(message: Descriptor, path: str, where: str) -> None:
    """Refuses a template whose field path the message does not have (the server does not start)."""
    current: Descriptor | None = message
    for name in path.split("."):
        field = current.fields_by_name.get(name) if current is not None else None
        if field is None:
            raise DeclarationError(f"{where!r}: {message.full_name} has no field {path!r}")
        current = field.message_type


def field_values(message: Message, path: str) -> list[str]:
    """The values at a dotted field path, as strings (enum values by name); repeated fields fan out. One lazy
    pass over the items: a batch request's check costs about what reading its items once does."""
    values: Iterable[Any] = (message,)
    # types-protobuf adds the upb Descriptor (same API, attributes declared Incomplete) to DESCRIPTOR's type.
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    field: FieldDescriptor | None = None
    for name in path.split("."):
        field = descriptor.fields_by_name[name]
        get = attrgetter(name)
        values = itertools.chain.from_iterable(map(get, values)) if field.is_repeated else map(get, values)
        descriptor = field.message_type
    if field is not None and field.type == FieldDescriptor.TYPE_STRING:
        return list(values)
    if field is not None and field.enum_type is not None:
        names = field.enum_type.values_by_number
        return [names[v].name if v in names else str(v) for v in values]
    return [str(v) for v in values]


@dataclass(frozen=True)
class Declaration:
    """How one method ("<package>.<Service>/<Method>") touches resources."""

    method: str
    request: tuple[Template, ...]
    resolved: tuple[Template, ...]
    items_field: str
    item: tuple[Template, ...]
    service_wide: bool

    @classmethod
    def of(cls, method: MethodDescriptor) -> Declaration:
        name = f"{method.containing_service.full_name}/{method.name}"
        options = method.GetOptions()
        extension: Any = common_pb2.authorization
        if not options.HasExtension(extension):
            raise DeclarationError(f"{name} declares no (privmesh.common.v1.authorization) option")
        declared: common_pb2.MethodAuthorization = options.Extensions[extension]
        request = tuple(Template.parse(a, method.input_type) for a in declared.request)
        resolved = tuple(Template.parse(a, None) for a in declared.resolved)
        item: tuple[Template, ...] = ()
        if declared.items_field:
            field = method.output_type.fields_by_name.get(declared.items_field)
            if field is None or field.message_type is None or not field.is_repeated:
                raise DeclarationError(f"{name}: items_field {declared.items_field!r} is no repeated message field")
            item = tuple(Template.parse(a, field.message_type) for a in declared.item)
            if not item:
                raise DeclarationError(f"{name}: items_field without item templates")
        if declared.service_wide == bool(request or resolved or item):
            raise DeclarationError(f"{name}: declare either service_wide or the resources it touches")
        return cls(name, request, resolved, declared.items_field, item, declared.service_wide)

    @classmethod
    def without_contract(cls, method: str, resolved: tuple[str, ...] = ()) -> Declaration:
        """For a service with no contract (the runtime's echo): service-wide, or resources its handler resolves."""
        return cls(method, (), tuple(Template(r, (r,), None) for r in resolved), "", (), not resolved)

    def request_resources(self, request: Message, caller: str) -> list[str]:
        """The resources the request names, each once (a batch of items names a few fields many times)."""
        return list(dict.fromkeys(name for t in self.request if t.applies(request, caller)
                                  for name in t.names(request)))

    def item_resources(self, item: Message, caller: str) -> list[str]:
        return list(dict.fromkeys(name for t in self.item if t.applies(item, caller) for name in t.names(item)))


def declaration(method: str) -> Declaration:
    """The declaration of "<package>.<Service>/<Method>" from the generated contracts."""
    service_name, _, method_name = method.partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        raise DeclarationError(f"{method}: no such service in the contracts") from None
    found = service.methods_by_name.get(method_name)
    if found is None:
        raise DeclarationError(f"{method}: no such method in the contracts")
    return Declaration.of(found)
