"""The command line checked against the command before it runs, and ``-h``/``--help`` on stdout.

``fire`` matches flags to a function's parameters only while it calls it: a misspelled flag is
reported ("Could not consume arg") after the command has done its work, and a one-letter flag is
taken for any parameter that starts with that letter (``-h`` for ``--hf``). :func:`check_command`
reads the arguments the way fire will, against the command's signature, before anything runs:

* ``-h`` or ``--help`` anywhere prints the command's help on stdout (so it can be piped to
  ``grep``) and exits 0;
* a flag that is no parameter (``--name``, ``--name=value``, ``--noname`` for a switch, fire's
  ``--name-with-dashes``) is one line naming it and, where a parameter is spelled alike, the flag
  meant; an ambiguous one-letter flag the same;
* more bare arguments than the command's positional parameters (those before ``*``), an unknown
  or missing subcommand (``gpt2_eval lambada``) likewise; each raises
  :class:`~gpt2_common.cli.errors.UsageError` (exit status 2).

The help is fire's page, rendered from the command's docstring. fire's docstring parser keeps only
the text before a colon on a continuation line of an ``Args:`` entry, so write those lines without
one (tests/test_cli_args.py checks that every flag's description is shown whole).

Arguments after a lone ``--`` are fire's own flags and are left to fire. Standard library only at
import (fire's help renderer is imported only to print help).
"""
from __future__ import annotations

import difflib
import inspect
import re
import sys
from typing import Any, Callable, List, NoReturn, Sequence

from .errors import UsageError

HELP_FLAGS = ("-h", "--help")


def is_flag(arg: str) -> bool:
    """Whether fire reads ``arg`` as a flag (``--x``, ``-x``; a negative number is a value)."""
    return arg.startswith("--") or bool(re.match(r"^-[a-zA-Z]", arg))


def check_command(component: Any, argv: Sequence[str], name: str) -> None:
    """Check ``argv`` (the arguments after the program name) against ``component``: a function, or
    a dict of subcommand name -> function. Prints help and exits 0 for ``-h``/``--help``; raises
    :class:`UsageError` for anything fire could not hand to the function."""
    args, fire_flags = _split_fire_flags(list(argv))
    wants_help = any(a in HELP_FLAGS for a in args + fire_flags)
    if isinstance(component, dict):
        command = args[0] if args and not is_flag(args[0]) else None
        if command is None:
            if wants_help:
                print_help(component, name)
            raise UsageError(f"give a command: {' or '.join(component)} (see {name} --help)")
        if command not in component:
            raise UsageError(f"unknown command {command!r} for {name}: choose one of {', '.join(component)}")
        component, name, args = component[command], f"{name} {command}", args[1:]
    if wants_help:
        print_help(component, name)
    _check_arguments(component, args, name)


def _split_fire_flags(args: List[str]) -> tuple:
    """``(command arguments, fire's own flags)``: fire's flags follow the last lone ``--``."""
    if "--" in args:
        i = len(args) - 1 - args[::-1].index("--")
        return args[:i], args[i + 1:]
    return args, []


def _check_arguments(fn: Callable[..., Any], args: List[str], name: str) -> None:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # any flag is a parameter
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    given, bare, i = set(), [], 0
    while i < len(args):
        arg = args[i]
        if not is_flag(arg):
            bare.append(arg)
            i += 1
            continue
        key, equals, _ = arg.lstrip("-").partition("=")
        key = key.replace("-", "_")
        switch = not equals and (i + 1 == len(args) or is_flag(args[i + 1]))  # no value follows
        keyword = _keyword(key, switch, names, arg, name)
        given.add(keyword)
        i += 1 if (equals or switch) else 2
    free = [p for p in positional if p not in given]
    if len(bare) > len(free) and not varargs:
        extra = bare[len(free)]
        takes = (f"takes {len(positional)} positional argument{'s' * (len(positional) != 1)} "
                 f"({', '.join(p.upper() for p in positional)})" if positional else "takes no positional arguments")
        raise UsageError(f"unexpected argument {extra!r}: {name} {takes}; everything else is a --flag "
                         f"(see {name} --help)")


def _keyword(key: str, switch: bool, names: List[str], arg: str, name: str) -> str:
    """The parameter fire gives flag ``arg`` to (``key`` without dashes and value), or UsageError."""
    if key in names:
        return key
    if switch and key.startswith("no") and key[2:] in names:
        return key[2:]
    shown = arg.split("=", 1)[0]
    if key.startswith("no") and key[2:] in names:  # --nohf=1, or --nohf followed by a value
        raise UsageError(f"{shown} is a switch's off form and takes no value: give --{key[2:]}=VALUE or {shown} "
                         f"alone (see {name} --help)")
    if len(key) == 1:  # fire's one-letter shortcut: the only parameter starting with that letter
        matches = [n for n in names if n[0] == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"flag {shown} is ambiguous for {name}: it could be "
                             f"{' or '.join('--' + m for m in matches)}")
    raise UsageError(f"unknown flag {shown} for {name}{_did_you_mean(key, names, '--')} (see {name} --help)")


def _did_you_mean(word: str, choices: Sequence[str], prefix: str) -> str:
    """``": did you mean --x?"`` for the closest of ``choices`` or their off forms (``--nox``)."""
    close = difflib.get_close_matches(word, [*choices, *("no" + c for c in choices)], n=1, cutoff=0.6)
    return f": did you mean {prefix}{close[0]}?" if close else ""


def help_text(component: Any, name: str) -> str:
    """fire's help page for ``component`` (a function, or the dict of a command's subcommands)
    under the command line ``name`` (``"gpt2_eval lambada"`` for a subcommand)."""
    from fire import helptext, trace

    program, _, sub = name.partition(" ")
    if sub:  # fire's own trace of "program sub", so the usage line reads "program sub <flags>"
        t = trace.FireTrace({sub: component}, name=program)
        t.AddAccessedProperty(component, sub, [sub], None, None)
    else:
        t = trace.FireTrace(component, name=program)
    return helptext.HelpText(component, trace=t)


def print_help(component: Any, name: str) -> NoReturn:
    """Print :func:`help_text` on stdout (no pager) and exit 0."""
    sys.stdout.write(help_text(component, name).rstrip("\n") + "\n")
    sys.stdout.flush()
    sys.exit(0)

