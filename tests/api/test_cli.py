"""The user administration command, against the test database."""

from __future__ import annotations

import pytest

from storage.users import authenticate, get_user_by_username, list_users


def test_create_list_set_password_delete(cli, sessions, capsys):
    assert cli("users", "create", "carol", "--password-stdin", stdin="s3cret-pw\n") == 0
    assert cli("users", "create", "carol", "--password-stdin", stdin="other-pw\n") == 1
    assert "already exists" in capsys.readouterr().err
    with sessions() as db:
        assert authenticate(db=db, username="carol", password="s3cret-pw") is not None
    assert cli("users", "list") == 0
    assert "\tcarol\t" in capsys.readouterr().out
    assert cli("users", "set-password", "carol", "--password-stdin", stdin="n3w-password\n") == 0
    with sessions() as db:
        assert authenticate(db=db, username="carol", password="s3cret-pw") is None
        assert authenticate(db=db, username="carol", password="n3w-password") is not None
    assert cli("users", "delete", "carol") == 0
    assert cli("users", "delete", "carol") == 1
    with sessions() as db:
        assert get_user_by_username(db=db, username="carol") is None


def test_empty_password_is_refused(cli):
    with pytest.raises(SystemExit, match="empty"):
        cli("users", "create", "dave", "--password-stdin", stdin="\n")


@pytest.mark.parametrize(
    ("name", "password", "refusal"),
    [
        ("erin", "short", "shorter than 8"),
        ("erin", "x" * 1025, "under 1024"),
        ("e" * 65, "long-enough", "1 to 64"),
        ("er\x00in", "long-enough", "control character"),
        ("er\nin", "long-enough", "control character"),
    ],
)
def test_an_account_no_login_could_use_or_a_guessable_password_is_refused(
    cli, sessions, name, password, refusal
):
    with sessions() as db:
        before = len(list_users(db=db))
    with pytest.raises(SystemExit, match=refusal):
        cli("users", "create", name, "--password-stdin", stdin=password + "\n")
    with sessions() as db:
        assert len(list_users(db=db)) == before  # nothing stored


def test_an_operator_sets_the_highest_priority_a_user_may_ask_for(cli, sessions, capsys):
    assert cli("users", "create", "batchbot", "--password-stdin", stdin="long-enough\n") == 0
    with sessions() as db:
        bot = get_user_by_username(db=db, username="batchbot")
        assert bot is not None and bot.max_priority == 5  # the default
    assert cli("users", "set-max-priority", "batchbot", "2") == 0
    assert "batchbot may use priorities up to 2" in capsys.readouterr().out
    with sessions() as db:
        bot = get_user_by_username(db=db, username="batchbot")
        assert bot is not None and bot.max_priority == 2
    assert cli("users", "list") == 0
    assert "max priority 2" in capsys.readouterr().out
    assert cli("users", "set-max-priority", "nobody", "9") == 1
    with pytest.raises(SystemExit):  # 0 to 9 only
        cli("users", "set-max-priority", "batchbot", "10")
