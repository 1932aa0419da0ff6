"""The `sealgate` command.

A thin adapter: every subcommand parses its arguments, calls one function of a lower layer and prints the result.
Bad input never produces a traceback: a `SealgateError` becomes a one-line message and a non-zero exit status
(2 for usage errors, 1 otherwise), because scripts depend on those statuses.
"""

from __future__ import annotations

import sys

import click

from sealgate import __version__
from sealgate.cli.apk import apk
from sealgate.cli.bundle import bundle
from sealgate.cli.keys import keys
from sealgate.cli.record import record
from sealgate.cli.sign import sign
from sealgate.errors import SealgateError, UsageError

EXIT_FAILED = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sealgate")
def cli() -> None:
    """sealgate: the release-and-update trust chain of an Android distribution."""


cli.add_command(apk)
cli.add_command(keys)
cli.add_command(bundle)
cli.add_command(sign)
cli.add_command(record)


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
