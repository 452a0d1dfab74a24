"""`hpcjup sites [NAME]`: the site presets, built in and the user's own."""

from __future__ import annotations

from typing import Any

import click

from hpcjup.cli.app import App, json_option


@click.command("sites")
@click.argument("name", required=False)
@json_option
@click.pass_obj
def command(app: App, name: str | None) -> None:
    """List the site presets (name, description, where the facts come from), or show one.

    Use one with `--site NAME` or `site = "NAME"` in a profile; add your own as
    <config dir>/sites/NAME.toml (same form as the built-in ones, which `hpcjup sites NAME` shows).
    """
    from hpcjup.config.profiles import config_dir
    from hpcjup.config.sites import list_sites, load_site, user_sites_dir

    directory = config_dir()
    if name:
        site = load_site(name, directory)
        app.ui.result(site.to_dict(), text=lambda: _details(site.to_dict()))
        return
    sites = [site.to_dict() for site in list_sites(directory)]
    user_dir = user_sites_dir(directory)

    def text() -> str:
        width = max([len(s["name"]) for s in sites] + [4])
        lines = [
            f"{s['name'].ljust(width)}  {s['title']}: {s['description']}\n{' ' * width}  source: {s['source']}"
            + ("" if s["builtin"] else f" (your file {s['file']})")
            for s in sites
        ]
        return "\n".join([*lines, f"\nYour own: {user_dir}/NAME.toml. Details: hpcjup sites NAME"])

    app.ui.result({"sites": sites, "user_dir": str(user_dir)}, text=text)


def _details(site: dict[str, Any]) -> str:
    lines = [
        f"{site['title']} ({site['name']}): {site['description']}",
        f"source:     {site['source']}",
        f"file:       {site['file']}",
    ]
    if site["hosts"]:
        lines.append(f"hosts:      {', '.join(site['hosts'])}")
    if site["partitions"]:
        lines.append(f"partitions: {', '.join(site['partitions'])}")
    lines.append(f"account:    {'required (--account)' if site['account_required'] else 'optional'}")
    for key, value in site["defaults"].items():
        lines.append(f"default     {key} = {', '.join(value) if isinstance(value, list) else value}")
    if site["notes"]:
        lines.append(f"notes:      {site['notes']}")
    return "\n".join(lines)
