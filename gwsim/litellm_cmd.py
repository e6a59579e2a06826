"""``gwsim export litellm`` and ``gwsim import litellm``: a scenario's router as a LiteLLM proxy
config and back (``gwsim.litellm.config``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _warn(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"gwsim: warning: {' '.join(line.split())}", err=True)


def dump_yaml(config: dict, header: str = "") -> str:
    import yaml

    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)


def read_yaml(path: str) -> object:
    """A YAML file, or one line naming the file and what is wrong."""
    import yaml

    from simulator.errors import ScenarioError

    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{path}: expected a LiteLLM config file, got {'a directory' if p.is_dir() else 'nothing at that path'}")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: expected UTF-8 YAML, got bytes that are not UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{path}: {where}expected valid YAML, got a syntax error ({problem})") from None


def export_litellm(scenario_path: str, overrides: list[str] | tuple[str, ...] = (), api_bases: dict[str, str] | None = None):
    """(config, warnings) for the scenario at ``scenario_path`` (with ``--set`` overrides)."""
    from gwsim.litellm.config import export_config
    from simulator.scenario import apply_overrides, load_scenario, read_scenario_data

    sc = load_scenario(scenario_path, list(overrides))
    raw = apply_overrides(read_scenario_data(scenario_path), list(overrides), str(scenario_path))
    return export_config(sc, raw, str(scenario_path), api_bases)


def register(cli: click.Group) -> None:
    @cli.group("export")
    def export_group() -> None:
        """Write a scenario as another tool's configuration."""

    @export_group.command("litellm")
    @click.argument("scenario", type=click.Path())
    @click.option("-o", "--out", type=click.Path(), default=None, help="Config file to write [default: stdout].")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a scenario field (repeatable).")
    @click.option("--api-base", "api_bases", multiple=True, metavar="PROVIDER=URL",
                  help="A provider's api_base (repeatable) [default: read from $GWSIM_API_BASE_<PROVIDER> by the proxy].")
    def export_litellm_cmd(scenario, out, overrides, api_bases) -> None:
        """Write the LiteLLM proxy config (config.yaml) that makes the proxy route as the scenario's [router] says.

        The scenario's other tables (providers' latency and faults, traffic, run) go under a
        top-level `gwsim` key the proxy ignores, so `gwsim import litellm` gives the scenario back.
        Settings LiteLLM's proxy does not have are named in one warning line each."""
        bases = {}
        for item in api_bases:
            name, sep, url = item.partition("=")
            if not sep or not name or not url:
                raise click.BadParameter(f"expected PROVIDER=URL, got {item!r}", param_hint="--api-base")
            bases[name] = url
        config, warnings = export_litellm(scenario, overrides, bases)
        _warn(warnings)
        text = dump_yaml(config, f"# LiteLLM proxy config written by `gwsim export litellm {scenario}`\n")
        if out is None:
            sys.stdout.write(text)
            return
        from gwsim.output import atomic_write_text

        atomic_write_text(out, text)
        click.echo(f"wrote {out}", err=True)

    @cli.group("import")
    def import_group() -> None:
        """Read another tool's configuration as a scenario."""

    @import_group.command("litellm")
    @click.argument("config", type=click.Path())
    @click.option("-o", "--out", type=click.Path(), default=None, help="Scenario TOML to write [default: stdout].")
    def import_litellm_cmd(config, out) -> None:
        """Read a LiteLLM proxy config (model_list, router_settings, litellm_settings) as a scenario.

        Model groups and their deployments become [router] (each deployment a [providers] entry),
        router_settings its strategy, retries, cooldowns and fallbacks.  Keys gwsim does not model,
        and the placeholders for what a LiteLLM config cannot say (latencies, traffic), are named
        in one warning line each.  The scenario is validated before it is written."""
        import tomli_w

        from gwsim.litellm.config import import_config
        from simulator.scenario import scenario_from_data

        data, warnings = import_config(read_yaml(config), str(config))
        scenario_from_data(data, str(config), Path(config).parent)  # one line on anything wrong, nothing written
        _warn(warnings)
        text = tomli_w.dumps(_no_none(data))
        if out is None:
            sys.stdout.write(text)
            return
        from gwsim.output import atomic_write_text

        atomic_write_text(out, text)
        click.echo(f"wrote {out}", err=True)


def _no_none(value):
    """TOML has no null: keys set to None are left out (the schema's default)."""
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    return value
