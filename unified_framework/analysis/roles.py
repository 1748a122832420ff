"""Which label value plays which part in a degradation analysis.

A label volume of an implant study holds four roles: background (soft tissue, marrow,
air), bone, residual implant material and the degradation layer (corrosion products).
The framework's phantom and SUN use ``0, 1, 2, 3`` in this order
(:data:`unified_framework.data.CLASS_NAMES`); other segmentations number them
differently, so the roles can be set by number or by class name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InputError

#: Role names and the words accepted for them (lower case).
ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "background": ("background", "bg", "soft tissue", "marrow"),
    "bone": ("bone",),
    "residual": ("residual", "residual implant", "residual material", "implant", "metal"),
    "layer": ("layer", "degradation layer", "degradation", "corrosion", "corrosion layer"),
}


@dataclass(frozen=True)
class ClassRoles:
    """Label value of each role; ``None`` for a role absent from the segmentation.

    Attributes
    ----------
    background, bone, residual, layer : int or None
        Label values of background, bone, residual implant material and degradation
        layer. Every other value counts as background.

    Examples
    --------
    >>> ClassRoles().residual, ClassRoles(bone=4).bone
    (2, 4)
    """

    background: int | None = 0
    bone: int | None = 1
    residual: int | None = 2
    layer: int | None = 3

    def as_dict(self) -> dict[str, int | None]:
        """The roles as a plain mapping (for reports)."""
        return {
            "background": self.background,
            "bone": self.bone,
            "residual": self.residual,
            "layer": self.layer,
        }

    @property
    def implant(self) -> tuple[int, ...]:
        """Label values that make up the implant region (residual material and layer)."""
        return tuple(v for v in (self.residual, self.layer) if v is not None)


def _role_of(word: str) -> str:
    key = word.strip().lower().replace("_", " ").replace("-", " ")
    for role, aliases in ROLE_ALIASES.items():
        if key in aliases:
            return role
    raise InputError(
        f"classes: unknown role {word!r}; expected one of background, bone, residual, layer",
        field="classes",
    )


def resolve_roles(
    spec: str | Mapping[str, int | str] | ClassRoles | None = None,
    class_names: Sequence[str] | None = None,
) -> ClassRoles:
    """Build :class:`ClassRoles` from a specification by number or by class name.

    Parameters
    ----------
    spec : str, mapping, ClassRoles or None
        ``"bone=1,residual=2,layer=3"`` (roles not named keep their default) or a
        mapping role -> value. A value may be a label number or a class name from
        ``class_names`` (``"residual=residual implant"``). ``None``: the framework's
        numbering, or the one ``class_names`` implies.
    class_names : sequence of str, optional
        Names of the label values ``0, 1, 2, ...`` (e.g. a SUN model's classes); used
        to resolve names and, without ``spec``, to find every role by its name.

    Returns
    -------
    ClassRoles

    Raises
    ------
    InputError
        For an unknown role or class name, a non-integer value, or two roles on one
        value.

    Examples
    --------
    >>> resolve_roles("residual=5,layer=6").as_dict()
    {'background': 0, 'bone': 1, 'residual': 5, 'layer': 6}
    >>> resolve_roles(None, ["bg", "bone", "degradation layer", "residual implant"]).residual
    3
    >>> resolve_roles("layer=none").layer is None
    True
    """
    if isinstance(spec, ClassRoles):
        return spec
    values: dict[str, int | None] = ClassRoles().as_dict()
    names = [str(n).strip().lower() for n in class_names] if class_names else []
    if names:
        found = {}
        for index, name in enumerate(names):
            try:
                found[_role_of(name)] = index
            except InputError:
                continue
        values = {role: found.get(role) for role in values}
    items: list[tuple[str, int | str]]
    if isinstance(spec, str):
        items = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            word, sep, text = part.partition("=")
            if not sep:
                raise InputError(
                    f"classes: {part!r} is not ROLE=VALUE (e.g. residual=2)", field="classes"
                )
            items.append((word, text.strip()))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
    for role_word, value in items:
        role = _role_of(role_word)
        values[role] = _value(value, names)
    taken = [v for v in values.values() if v is not None]
    if len(taken) != len(set(taken)):
        raise InputError(f"classes: two roles share one label value ({values})", field="classes")
    return ClassRoles(**values)


def _value(value: int | str, names: list[str]) -> int | None:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lower() in ("none", "-", ""):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    if text.lower() in names:
        return names.index(text.lower())
    raise InputError(
        f"classes: {text!r} is neither a label number nor a class name"
        + (f" ({', '.join(names)})" if names else ""),
        field="classes",
    )
