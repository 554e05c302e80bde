"""Completion of a debugger command's arguments from its argument parser.

:func:`complete` offers option names, the values of options with choices, file names where a
file goes (``--memmap json FILE``, a ``FILE`` metavar), and what a command's operands can be (a
callable the session passes: backend names for ``pt-backend``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    """What the word being typed can become: whole ``candidates``, each starting with
    ``word``; ``filename`` says that the word is a file name (the candidates are then the
    files and directories, ``/`` after a directory, that :func:`complete_path` finds)."""

    word: str
    candidates: tuple[str, ...] = ()
    filename: bool = False

    @classmethod
    def path(cls, word: str) -> Completion:
        return cls(word, complete_path(word), filename=True)


#: Completes an operand: given the operands typed before it and the word being typed.
Operands = Callable[[Sequence[str], str], Completion]


def complete_path(word: str) -> tuple[str, ...]:
    """The files and directories whose path starts with ``word`` (``~`` expanded for the
    lookup only), directories ending in ``/``; hidden ones only when ``word`` names them."""
    head, sep, tail = word.rpartition("/")
    directory = os.path.expanduser(head + sep) if sep else "."
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    found = []
    for name in names:
        if name.startswith(tail) and (tail.startswith(".") or not name.startswith(".")):
            is_dir = os.path.isdir(os.path.join(directory, name))
            found.append(head + sep + name + ("/" if is_dir else ""))
    return tuple(found)


def complete(
    parser: argparse.ArgumentParser, text: str, operands: Operands | None = None
) -> Completion:
    """Completions of the last word of ``text`` (the arguments typed so far) for ``parser``.

    :param operands: completes a word that is no option nor an option's value; without it
        such a word gets nothing, and an empty word gets every option.
    """
    words = text.split()
    word = words.pop() if words and not text[-1:].isspace() else ""
    actions: dict[str, argparse.Action] = {}
    for act in parser._actions:
        for option in act.option_strings:
            actions[option] = act
    # The option whose values are being typed, if any, and its values so far.
    pending: argparse.Action | None = None
    values: list[str] = []
    positionals: list[str] = []
    for w in words:
        found = actions.get(w)
        if found is not None:
            pending, values = (found, []) if found.nargs != 0 else (None, [])
        elif pending is not None:
            values.append(w)
            if _has_all_values(pending, values):
                pending = None
        elif not w.startswith("-"):
            positionals.append(w)
    if pending is not None and not word.startswith("-"):
        return _complete_value(pending, values, word)
    options = sorted(o for o in actions if o.startswith("--"))
    if word.startswith("-"):
        return Completion(word, tuple(o for o in options if o.startswith(word)))
    if operands is not None:
        return operands(positionals, word)
    if word:
        return Completion(word)
    return Completion(word, tuple(options))


def _complete_value(action: argparse.Action, values: Sequence[str], word: str) -> Completion:
    if action.dest == "memmap":  # KIND, and a FILE after json
        if not values:
            kinds = ("bootinfo", "e820", "json")
            return Completion(word, tuple(k for k in kinds if k.startswith(word)))
        return Completion.path(word) if values[0] == "json" else Completion(word)
    if action.choices is not None:
        choices = [str(c) for c in action.choices]
        return Completion(word, tuple(c for c in choices if c.startswith(word)))
    metavar = action.metavar
    names = metavar if isinstance(metavar, tuple) else (metavar,)
    return Completion.path(word) if "FILE" in names else Completion(word)


def _has_all_values(action: argparse.Action, values: Sequence[str]) -> bool:
    """Whether an option has taken all its values (``--memmap``: KIND, or ``json FILE``)."""
    if action.dest == "memmap":
        return len(values) >= 2 or values[0] != "json"
    if isinstance(action.nargs, int):
        return len(values) >= action.nargs
    return action.nargs in (None, "?")
