from __future__ import annotations

import pytest

from handlers.grammar import Flag, Positional, Signature, parse_args, split_words, suggest
from services.core.errors import InvalidInput

CREATE = Signature(
    positionals=(Positional("NAME"),),
    flags=(Flag("image", "base image", "IMG"), Flag("docker", "enable Docker"),
           Flag("memory", "memory limit", "SIZE")),
)
EXEC = Signature(positionals=(Positional("NAME"),), passthrough="CMD")


def test_split_words_quotes_and_strips_the_slash_command():
    assert split_words('/ct exec web1 -- sh -c "echo hi"') == [
        "exec", "web1", "--", "sh", "-c", "echo hi"]


@pytest.mark.parametrize("text", ['say "unterminated', "trailing\\"])
def test_split_words_reports_unbalanced_quoting(text):
    with pytest.raises(InvalidInput, match="cannot read the command"):
        split_words(text)


def test_split_words_refuses_overlong_and_nul():
    with pytest.raises(InvalidInput, match="too long"):
        split_words("a" * 20001)
    with pytest.raises(InvalidInput, match="NUL"):
        split_words("help\x00")


def test_flags_with_space_or_equals_and_switches():
    args = parse_args("create", CREATE, ["web1", "--image=bookworm", "--docker",
                                         "--memory", "2G"])
    assert args.positionals == {"NAME": "web1"}
    assert args.flags == {"image": "bookworm", "docker": True, "memory": "2G"}


def test_unknown_flag_suggests_the_close_one():
    with pytest.raises(InvalidInput) as err:
        parse_args("create", CREATE, ["web1", "--dokcer"])
    assert "no option `--dokcer`" in str(err.value)
    assert "did you mean `docker`" in str(err.value)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["web1", "--image"], "needs a value"),
        (["web1", "--docker=yes"], "takes no value"),
        (["web1", "--docker", "--docker"], "given twice"),
        (["web1", "-rf"], "options are spelled `--name`"),
        (["web1", "extra"], "unexpected argument `extra`"),
        ([], "missing NAME"),
        (["web1", "--", "ls"], "takes no arguments after `--`"),
    ],
)
def test_bad_arguments_say_what_is_wrong(words, message):
    with pytest.raises(InvalidInput, match=message):
        parse_args("create", CREATE, words)


def test_passthrough_keeps_everything_after_double_dash_verbatim():
    args = parse_args("exec", EXEC, ["web1", "--", "ls", "--all", "-l"])
    assert args.positionals == {"NAME": "web1"}
    assert args.passthrough == ("ls", "--all", "-l")


def test_usage_line_is_generated_from_the_signature():
    assert CREATE.usage("create") == (
        "create NAME [--image IMG] [--docker] [--memory SIZE]")
    assert EXEC.usage("exec") == "exec NAME -- CMD…"


def test_suggest_returns_none_when_nothing_is_close():
    assert suggest("zzzz", ["create", "destroy"]) is None
    assert suggest("creat", ["create", "destroy"]) == "did you mean `create`?"


@pytest.mark.parametrize("raw", ["٨٠٨٠", "8080" + "0" * 16, "1_000", "+80", " 80", "0", "65536"])
def test_ports_have_one_grammar_for_numbers(raw):
    from services.grammar.ports import host_port, port, port_spec

    with pytest.raises(InvalidInput, match=r"not a port|give the host port"):
        port(raw)
    with pytest.raises(InvalidInput):
        port_spec(f"{raw}:80")
    with pytest.raises(InvalidInput, match="give the host port"):
        host_port(raw)


@pytest.mark.parametrize("raw", ["١٢", "9" * 20, "1e3", "-1"])
def test_counts_and_job_ids_take_ascii_digits_only(raw):
    from services.grammar.numbers import count, job_id, seconds

    with pytest.raises(InvalidInput):
        count(raw, maximum=100)
    with pytest.raises(InvalidInput):
        job_id(raw)
    with pytest.raises(InvalidInput):
        seconds(raw, maximum=600)


def test_durations_and_sizes():
    from services.grammar.numbers import memory_limit, seconds, size

    assert seconds("90", maximum=600) == 90 and seconds("5m", maximum=600) == 300
    assert size("512M") == 512 * 2**20 and size("1.5GiB") == int(1.5 * 2**30)
    with pytest.raises(InvalidInput, match="too small"):
        memory_limit("16M")
