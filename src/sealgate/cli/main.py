"""The `sealgate` command.

A thin adapter: every subcommand parses its arguments, calls one function of a lower layer and prints the result.
Bad input never produces a traceback: a `SealgateError` becomes a one-line message and a non-zero exit status
(2 for usage errors, 1 otherwise), because scripts depend on those statuses.
"""

from __future__ import annotations

import importlib
import sys

import click

from sealgate import __version__
from sealgate.errors import SealgateError, UsageError

EXIT_FAILED = 1
EXIT_USAGE = 2


#: Subcommands by name: "module:attribute" of their click command, imported when the command runs (or --help lists
#: them), so that `sealgate apk sign` does not pay for loading the bundle, device and keystore-ceremony code.
LAZY_COMMANDS = {
    "apk": "sealgate.cli.apk:apk",
    "keys": "sealgate.cli.keys:keys",
    "bundle": "sealgate.cli.bundle:bundle",
    "sign": "sealgate.cli.sign:sign",
    "record": "sealgate.cli.record:record",
    "device": "sealgate.cli.device:device",
    "repo": "sealgate.cli.repo:repo",
    "ota": "sealgate.cli.ota:ota",
    "release": "sealgate.cli.release:release",
}


class LazyGroup(click.Group):
    """A group whose `LAZY_COMMANDS` are imported on first use; `add_command` still works for eager ones."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module_name, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
            loaded = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(loaded, click.Command):
                raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a click command")
            command = loaded
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sealgate")
def cli() -> None:
    """sealgate: the release-and-update trust chain of an Android distribution."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status instead of raising SystemExit mid-stack."""
    try:
        status = cli.main(args=argv, prog_name="sealgate", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help and --version
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_FAILED
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_FAILED
    except UsageError as exc:
        click.echo(f"sealgate: {exc}", err=True)
        return EXIT_USAGE
    except SealgateError as exc:
        click.echo(f"sealgate: {exc}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    # Subcommands return their exit status (a verdict is not an exception).
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
