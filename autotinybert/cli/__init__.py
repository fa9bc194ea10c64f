"""The `autotinybert` command. Every sub-command is built from its config type, with one syntax everywhere:

    autotinybert COMMAND [POSITIONAL ...] [--config FILE.yaml] [key=value ...] [section.key=value ...]

`--help` lists every key of the command's config with its type, default and doc, generated from the config
class. Each module of this package lists its commands in ``COMMANDS``; a `Command` names its config class by
import path, so `autotinybert --help` imports no config, torch or transformers at all.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UserError

MODULES = ("run", "demo", "space", "train", "extract", "export", "latency", "search", "finetune")


@dataclass(frozen=True)
class Command:
    name: str                      # "train-supernet", "latency measure"
    summary: str                   # one line for `autotinybert --help`
    config: str                    # "autotinybert.train.config:TrainSupernetConfig"
    run: Callable[[Any], int]      # takes the validated config, returns the exit status
    examples: tuple[str, ...] = ()
    config_positional: bool = False  # the first positional argument is the config file (`run CONFIG.yaml`)
    defaults: Callable[[], Any] | None = None  # a base config other than the class defaults (the demo's)
    words: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", tuple(self.name.split()))

    def config_class(self):
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)


def commands() -> list[Command]:
    out: list[Command] = []
    for name in MODULES:
        out.extend(importlib.import_module(f"{__name__}.{name}").COMMANDS)
    return out


# ---------------------------------------------------------------------------------------- help
def top_help(all_commands: list[Command]) -> str:
    from .. import __version__

    width = max(len(c.name) for c in all_commands)
    lines = [f"autotinybert {__version__}: find and build the best small BERT for a latency budget (AutoTinyBERT).",
             "", "usage: autotinybert COMMAND [POSITIONAL ...] [--config FILE.yaml] [key=value ...]",
             "       autotinybert COMMAND --help      every key of COMMAND with its type, default and meaning", "",
             "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in all_commands]
    lines += ["", "Settings are key=value (nested: section.key=value); values are YAML: 3, 1e-4, true, null, [a, b].",
              "Paths in a config file are relative to the file; on the command line, to the current folder."]
    return "\n".join(lines)


def command_help(command: Command) -> str:
    import textwrap

    from ..config import field_docs

    cls = command.config_class()
    base = command.defaults() if command.defaults else None
    rows = field_docs(cls) if base is None else _docs_with_base(cls, base)
    positional = cls.positional_keys()
    usage = f"usage: autotinybert {command.name}"
    usage += " CONFIG.yaml" if command.config_positional else ""
    usage += "".join(f" [{k.upper()}{' ...' if _is_list(cls, k) else ''}]" for k in positional)
    usage += "" if command.config_positional else " [--config FILE.yaml]"
    usage += " [key=value ...]"
    doc = textwrap.dedent(cls.__doc__ or "").strip()
    lines = [usage, "", textwrap.fill(" ".join(doc.split()), 110), "",
             "keys (key=value; nested: section.key=value; values are YAML):"]
    for key, kind, default, text in rows:
        if kind == "section":
            lines.append(f"  {key}:  section{(' - ' + text) if text else ''}")
            continue
        head = f"  {key} ({kind}, default {_short(default)})"
        if key in positional:
            head += " [positional]"
        lines.append(head)
        if text:
            lines.extend(textwrap.wrap(" ".join(text.split()), 106, initial_indent="      ",
                                       subsequent_indent="      "))
    if command.examples:
        lines += ["", "examples:"] + [f"  {e}" for e in command.examples]
    return "\n".join(lines)


def _docs_with_base(cls, base) -> list[tuple[str, str, Any, str]]:
    """field_docs with the defaults of `base` (a config instance), e.g. the demo's embedded config."""
    from ..config import field_docs

    flat = _flatten(base.to_dict())
    return [(k, t, flat.get(k, d), doc) for k, t, d, doc in field_docs(cls)]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        out[f"{prefix}{key}"] = value
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else "null" if value is None else str(value).replace("'", "")
    return text if len(text) <= 60 else text[:57] + "..."


def _is_list(cls, key: str) -> bool:
    import typing

    return typing.get_origin(cls.model_fields[key].annotation) is list


# ---------------------------------------------------------------------------------------- parsing
def parse(command: Command, argv: list[str]):
    """The validated config of `command` from its arguments (positional, --config FILE, key=value)."""
    from ..config import ConfigError, is_override

    cls = command.config_class()
    config_file, overrides, positional = None, [], []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--config" or token.startswith("--config="):
            if token == "--config":
                if i + 1 >= len(argv):
                    raise ConfigError("--config needs a file: --config FILE.yaml")
                i += 1
                config_file = argv[i]
            else:
                config_file = token.split("=", 1)[1]
        elif is_override(token):
            overrides.append(token)
        elif token.startswith("--") and len(token) > 2:
            key = token[2:].split("=", 1)[0].replace("-", "_")
            raise ConfigError(f"settings are written key=value, not as --options: write {key}=VALUE "
                              f"(see autotinybert {command.name} --help)")
        else:
            positional.append(token)
        i += 1
    if command.config_positional:
        if not positional:
            raise ConfigError(f"give the config file: autotinybert {command.name} CONFIG.yaml [key=value ...]")
        config_file, positional = positional[0], positional[1:]
    values = _positional_values(cls, command, positional)
    source = config_file if config_file is not None else (command.defaults() if command.defaults else None)
    return cls.load(source, overrides, values=values)


def _positional_values(cls, command: Command, tokens: list[str]) -> dict[str, Any]:
    from ..config import ConfigError

    keys = cls.positional_keys()
    values: dict[str, Any] = {}
    for key in keys:
        if not tokens:
            break
        if _is_list(cls, key):
            values[key], tokens = tokens, []
        else:
            values[key], tokens = tokens[0], tokens[1:]
    if tokens:
        hint = f"; this command takes {', '.join(k.upper() for k in keys)}" if keys else ""
        raise ConfigError(f"unexpected argument(s) {tokens}: settings are written key=value{hint} "
                          f"(see autotinybert {command.name} --help)")
    return values


def find(all_commands: list[Command], argv: list[str]) -> tuple[Command | None, list[str]]:
    for size in (2, 1):
        words = tuple(argv[:size])
        for c in all_commands:
            if c.words == words:
                return c, argv[size:]
    return None, argv


def _error(message: str) -> int:
    """One `error:` line on stderr (a multi-line message is joined), exit status 2."""
    print("error: " + " ".join(line.strip() for line in message.strip().splitlines() if line.strip()),
          file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    all_commands = commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_help(all_commands))
        return 0 if argv else 2
    if argv[0] == "--version":
        from .. import __version__

        print(f"autotinybert {__version__}")
        return 0
    command, rest = find(all_commands, argv)
    try:
        if command is None:
            group = [c for c in all_commands if c.words[0] == argv[0]]
            if group:
                print(f"autotinybert {argv[0]}: choose one of: "
                      + ", ".join(" ".join(c.words) for c in group), file=sys.stderr)
                return 2
            import difflib

            names = sorted({c.words[0] for c in all_commands})
            close = difflib.get_close_matches(argv[0], names, n=1)
            raise UserError(f"unknown command {argv[0]!r}{f'; did you mean {close[0]!r}?' if close else ''} "
                            f"(commands: {', '.join(names)})")
        if any(t in ("-h", "--help") for t in rest):
            print(command_help(command))
            return 0
        config = parse(command, rest)
        if not getattr(config, "progress", False):  # progress=false, or a command without bars: our lines only
            from ..quiet import quiet_libraries

            quiet_libraries()
        return int(command.run(config) or 0)
    except UserError as err:
        return _error(str(err))
    except OSError as err:  # permission, read-only, disk full, exists, not a folder ...: the path and the fix
        from ..io import describe_os_error

        return _error(describe_os_error(err) if err.errno is not None else str(err))
    except UnicodeDecodeError as err:  # a safety net: loaders name the file themselves
        return _error(f"a file is not UTF-8 text ({err.reason} at byte {err.start}); give a text file")
    except Exception as err:
        if type(err).__name__ != "SafetensorError":  # a safety net for a truncated or foreign .safetensors file
            raise
        return _error(f"a .safetensors file cannot be read ({err}); it is truncated or not a safetensors file: "
                      "write it again")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
