"""`mnemo keys|users|orgs|usage|models`: who may call the server, and what its models cost."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import typer

from mnemo.cli.common import ApiKeyOption, JsonOption, UrlOption, connected, fail, print_json, print_table

keys_app = typer.Typer(help="API keys of your organization (admin keys).", no_args_is_help=True)
users_app = typer.Typer(help="Users of your organization (admin keys).", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations (the root key).", no_args_is_help=True)
OrgOption = typer.Option("", "--org", help="Another organization (the root key only).")


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(help="What the key is for."),
    role: str = typer.Option("member", help="member or admin."),
    user: str = typer.Option("", help="The user it acts as; empty: a new user named after the key."),
    org: str = OrgOption,
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create an API key; prints its secret, shown this once."""
    if role not in ("member", "admin"):
        raise fail(f"unknown role {role!r}: member or admin")
    with connected(url, api_key) as client:
        key = client.api_keys.create(name, role=role, user_id=user, org_id=org)  # type: ignore[arg-type]
    if as_json:
        print_json(key)
    else:
        typer.echo(f"{key.id} ({key.role}, user {key.user_id})", err=True)
        typer.echo(key.secret)


@keys_app.command("list")
def keys_list(
    org: str = OrgOption, url: str = UrlOption, api_key: str | None = ApiKeyOption, as_json: bool = JsonOption
) -> None:
    """List active keys (without secrets)."""
    with connected(url, api_key) as client:
        keys = list(client.api_keys.list(org_id=org, limit=200).auto_paging_iter())
    if as_json:
        print_json(keys)
    else:
        print_table(keys, ["id", "name", "role", "user_id", "display_prefix", "created_at"])


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(help="The key to revoke."),
    org: str = OrgOption,
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Revoke a key."""
    with connected(url, api_key) as client:
        client.api_keys.revoke(key_id, org_id=org)
    typer.echo(f"revoked {key_id}")


@users_app.command("create")
def users_create(
    name: str = typer.Argument(help="The user's name."),
    org: str = OrgOption,
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a user; prints its id."""
    with connected(url, api_key) as client:
        user = client.users.create(name, org_id=org)
    if as_json:
        print_json(user)
    else:
        typer.echo(user.id)


@users_app.command("list")
def users_list(
    org: str = OrgOption, url: str = UrlOption, api_key: str | None = ApiKeyOption, as_json: bool = JsonOption
) -> None:
    """List users."""
    with connected(url, api_key) as client:
        users = list(client.users.list(org_id=org, limit=200).auto_paging_iter())
    if as_json:
        print_json(users)
    else:
        print_table(users, ["id", "name", "org_id", "created_at"])


@users_app.command("delete")
def users_delete(
    user_id: str = typer.Argument(help="The user to delete, with its keys."),
    org: str = OrgOption,
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Delete a user and its API keys."""
    with connected(url, api_key) as client:
        client.users.delete(user_id, org_id=org)
    typer.echo(f"deleted {user_id}")


@orgs_app.command("create")
def orgs_create(
    name: str = typer.Argument(help="The organization's name."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create an organization; prints its id."""
    with connected(url, api_key) as client:
        org = client.organizations.create(name)
    if as_json:
        print_json(org)
    else:
        typer.echo(org.id)


@orgs_app.command("list")
def orgs_list(url: str = UrlOption, api_key: str | None = ApiKeyOption, as_json: bool = JsonOption) -> None:
    """List organizations."""
    with connected(url, api_key) as client:
        orgs = list(client.organizations.list(limit=200).auto_paging_iter())
    if as_json:
        print_json(orgs)
    else:
        print_table(orgs, ["id", "name", "created_at"])


@orgs_app.command("delete")
def orgs_delete(
    org_id: str = typer.Argument(help="The organization to delete (refused while it has agents)."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Delete an organization with its users and keys."""
    with connected(url, api_key) as client:
        client.organizations.delete(org_id)
    typer.echo(f"deleted {org_id}")


Dimension = Literal["agent", "model", "day"]


def usage(
    by: list[str] = typer.Option([], "--by", help="Group by agent, model and/or day (repeatable)."),
    agent: str = typer.Option("", help="Only this agent's calls."),
    model: str = typer.Option("", help="Only this model's calls."),
    since: datetime | None = typer.Option(None, help="Calls at or after this time (ISO 8601, UTC)."),
    until: datetime | None = typer.Option(None, help="Calls before this time."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Tokens your organization's model calls spent."""
    unknown = [b for b in by if b not in ("agent", "model", "day")]
    if unknown:
        raise fail(f"cannot group by {', '.join(unknown)}: agent, model or day")
    group_by: list[Dimension] = [b for b in ("agent", "model", "day") if b in by]
    with connected(url, api_key) as client:
        rows = client.usage.get(group_by=group_by, agent_id=agent, model=model, start=since, end=until)
    if as_json:
        print_json(rows)
        return
    columns = [*(f"{d}_id" if d == "agent" else d for d in group_by)]
    print_table(
        rows,
        [*columns, "request_count", "prompt_tokens", "completion_tokens", "total_tokens"],
        ids=("agent_id",),
    )


def models(
    provider: str = typer.Option("", help="Only this provider's models."),
    ask: bool = typer.Option(False, "--ask-providers", help="Also ask the providers what they serve."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """The models agents can use, with their context windows."""
    with connected(url, api_key) as client:
        listed = client.models.list(provider=provider, include_provider_models=ask)
    if as_json:
        print_json(listed)
        return
    print_table(listed.models, ["name", "kind", "context_window", "max_output_tokens"], ids=("name",))
    if listed.unreachable_providers:
        typer.echo(f"unreachable: {', '.join(listed.unreachable_providers)}", err=True)
