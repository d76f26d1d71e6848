"""The level and time parser against lines as real programs write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from miniobserv.agent.levels import MAX_AHEAD, level_of, parse_line

READ = datetime(2026, 6, 5, 10, 5, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))  # the "local zone" of the agent host in these tests

LEVEL_TABLE = [
    # nginx access (combined) and error logs; Apache access and error logs
    ('127.0.0.1 - - [05/Jun/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"',
     "info"),
    ('10.0.0.2 - bob [05/Jun/2026:10:00:01 +0000] "GET /missing HTTP/1.1" 404 153 "-" "Mozilla"',
     "warn"),
    ('10.0.0.2 - - [05/Jun/2026:10:00:01 +0200] "POST /api HTTP/1.1" 502 166 "-" "requests/2"',
     "error"),
    ('2026/06/05 10:00:00 [error] 1234#1234: *1 open() "/usr/share/nginx/html/x" failed '
     '(2: No such file or directory), client: 10.0.0.1', "error"),
    ("2026/06/05 10:00:00 [warn] 1234#1234: *5 an upstream response is buffered", "warn"),
    ("2026/06/05 10:00:00 [notice] 1#1: start worker processes", "info"),
    ("2026/06/05 10:00:00 [crit] 1#1: *9 SSL_do_handshake() failed", "error"),
    ("[Fri Jun 05 10:00:00.123456 2026] [core:error] [pid 1234:tid 5678] [client 1.2.3.4:5678] "
     "AH00126: Invalid URI in request GET /x", "error"),
    ("[Fri Jun 05 10:00:00.123456 2026] [mpm_event:notice] [pid 1:tid 2] AH00489: Apache "
     "configured -- resuming normal operations", "info"),
    # PostgreSQL (default log_line_prefix, and Debian's with user@db)
    ("2026-06-05 10:00:00.123 UTC [123] LOG:  database system is ready to accept connections",
     "info"),
    ('2026-06-05 10:00:00.123 UTC [4567] app@shop ERROR:  relation "users" does not exist',
     "error"),
    ("2026-06-05 10:00:00.123 UTC [4567] app@shop STATEMENT:  SELECT * FROM users", "info"),
    ('2026-06-05 10:00:00 UTC [99] FATAL:  password authentication failed for user "app"',
     "error"),
    ("2026-06-05 10:00:00.123 UTC [99] WARNING:  there is no transaction in progress", "warn"),
    ("2026-06-05 10:00:00.123 UTC [99] DETAIL:  Key (id)=(1) already exists.", "info"),
    ("2026-06-05 10:00:00.123 UTC [7] PANIC:  could not write to file", "error"),
    # syslog, systemd/journald
    ("Jun  5 10:00:00 web-01 systemd[1]: Started Session 42 of user root.", "info"),
    ("Jun  5 10:00:00 web-01 sshd[2211]: error: kex_exchange_identification: Connection closed",
     "error"),
    ("Jun  5 10:00:00 web-01 kernel: [12345.678] Out of memory: Killed process 4321 (java)",
     "info"),
    ("Jun  5 10:00:00 web-01 myapp[77]: <err> cannot open socket", "error"),
    ("Jun 15 10:00:00 web-01 systemd[1]: nginx.service: Failed with result 'exit-code'.", "info"),
    ("2026-06-05T10:00:00.123456+00:00 web-01 CRON[3456]: (root) CMD (run-parts /etc/cron.hourly)",
     "info"),
    ("2026-06-05T10:00:00+0000 web-01 app[1]: WARNING: low disk space", "warn"),
    ("<3>Failed to start foo.service", "error"),
    ("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8", "error"),
    ("<165>1 2026-06-05T10:00:00.003Z mymachine evntslog - ID47 - An application event", "info"),
    # Python logging: basicConfig default, the cookbook format, uvicorn
    ("WARNING:root:disk almost full", "warn"),
    ("ERROR:myapp.db:failed to connect", "error"),
    ("2026-06-05 10:00:00,123 - myapp.db - ERROR - connection lost", "error"),
    ("2026-06-05 10:00:00,123 - myapp - DEBUG - cache miss for key=42", "debug"),
    ("INFO:     127.0.0.1:5000 - \"GET / HTTP/1.1\" 200 OK", "info"),
    ("Traceback (most recent call last):", "error"),
    ("ValueError: invalid literal for int() with base 10: 'x'", "error"),
    # Go: slog JSON, slog text, the default log package, logrus, zap, klog
    ('{"time":"2026-06-05T10:00:00.000+02:00","level":"ERROR","msg":"failed","err":"timeout"}',
     "error"),
    ('{"time":"2026-06-05T10:00:00Z","level":"WARN+2","msg":"queue is getting long"}', "warn"),
    ('time=2026-06-05T10:00:00.000+02:00 level=DEBUG msg="cache miss" key=42', "debug"),
    ('time=2026-06-05T10:00:00.000+02:00 level=WARN msg="disk almost full" pct=91', "warn"),
    ("2026/06/05 10:00:00 ERROR payment failed order=42", "error"),
    ('time="2026-06-05T10:00:00Z" level=error msg="container failed" id=abc', "error"),
    ("ERRO[0003] failed to connect to containerd", "error"),
    ("INFO[0000] starting server", "info"),
    ('{"level":"warn","ts":1780653600.5,"caller":"main.go:12","msg":"slow request"}', "warn"),
    ("2026-06-05T10:00:00.123Z\tERROR\tmain.go:12\tzap console line", "error"),
    ("E1205 10:00:00.000000    1234 controller.go:123] failed to sync pod default/web", "error"),
    ("W0605 10:00:00.000000       1 reflector.go:324] watch ended", "warn"),
    ("I0605 10:00:00.000000       1 main.go:10] starting kubelet", "info"),
    # Java: log4j, logback, Spring Boot, stack traces
    ("2026-06-05 10:00:00,123 ERROR [main] com.example.App - Unhandled exception", "error"),
    ("2026-06-05 10:00:00,123 [main] WARN  com.example.Pool - pool exhausted", "warn"),
    ("10:00:00.123 [main] DEBUG c.e.Repository - query took 3 ms", "debug"),
    ("2026-06-05T10:00:00.123+02:00 ERROR 1234 --- [main] c.e.App : Application run failed",
     "error"),
    ("java.lang.IllegalStateException: boom", "error"),
    ("Exception in thread \"main\" java.lang.NullPointerException", "error"),
    ("\tat com.example.App.main(App.java:10)", "info"),
    ("Caused by: java.io.IOException: disk full", "error"),
    ("Jun 05, 2026 10:00:00 AM org.apache.catalina.startup.Catalina start", "info"),
    ("SEVERE: Servlet.service() for servlet [dispatcher] threw exception", "error"),
    # JSON from other runtimes; Docker and CRI wrappers
    ('{"level":50,"time":1780653600000,"pid":1,"msg":"pino says no"}', "error"),
    ('{"level":30,"time":1780653600000,"msg":"pino says hi"}', "info"),
    ('{"version":"1.1","host":"web-01","short_message":"x","level":4}', "warn"),
    ('{"severity":"CRITICAL","message":"GCP structured log"}', "error"),
    ('{"@timestamp":"2026-06-05T10:00:00.000Z","log.level":"warn","message":"ECS flat"}', "warn"),
    ('{"@timestamp":"2026-06-05T10:00:00.000Z","log":{"level":"error"},"message":"ECS nested"}',
     "error"),
    ('{"asctime":"2026-06-05 10:00:00","levelname":"WARNING","message":"python-json-logger"}',
     "warn"),
    ('{"t":{"$date":"2026-06-05T10:00:00.123+00:00"},"s":"E","c":"NETWORK","msg":"conn lost"}',
     "error"),
    ('{"log":"2026-06-05 10:00:00 ERROR boom\\n","stream":"stderr","time":"2026-06-05T10:00:00Z"}',
     "error"),
    ('{"log":"hello\\n","stream":"stderr","time":"2026-06-05T10:00:00.123456789Z"}', "info"),
    ('2026-06-05T10:00:00.123Z stderr F {"level":"warn","msg":"inside a CRI line"}', "warn"),
    ('{"level":{"nested":"error"},"msg":"a level that is not a value"}', "info"),
    ('{"msg":"valid JSON, no level"}', "info"),
    ('{"level": "error", broken json', "info"),
    ("[1,2,3]", "info"),
    # others: gunicorn, PHP, MySQL, Redis, Android logcat, plain text
    ("[2026-06-05 10:00:00 +0000] [1234] [ERROR] Worker (pid:5678) exited with code 1", "error"),
    ("[2026-06-05 10:00:00 +0000] [1] [INFO] Booting worker with pid: 7", "info"),
    ("[05-Jun-2026 10:00:00 UTC] PHP Fatal error:  Uncaught Error: Call to undefined function",
     "error"),
    ("[05-Jun-2026 10:00:00 UTC] PHP Warning:  Undefined variable $x in /app/index.php", "warn"),
    ("2026-06-05T10:00:00.123456Z 0 [Warning] [MY-010068] [Server] CA certificate is self signed.",
     "warn"),
    ("2026-06-05T10:00:00.123456Z 8 [ERROR] [MY-012592] [InnoDB] Operating system error", "error"),
    ("1234:M 05 Jun 2026 10:00:00.123 # WARNING overcommit_memory is set to 0!", "warn"),
    ("1234:M 05 Jun 2026 10:00:00.123 * Ready to accept connections tcp", "info"),
    ("06-05 10:00:00.123  1234  1234 E ActivityManager: ANR in com.example", "error"),
    ("W/System.err( 1234): at java.lang.Thread.run", "warn"),
    ("[WARN] config file not found, using defaults", "warn"),
    ("[ error ] spaced bracket", "error"),
    ("Warning: permanently added the host key", "warn"),
    ("Error connecting to database", "error"),
    ("FATAL: out of memory", "error"),
    ("DEBUG starting worker", "debug"),
    ("TRACE entering handler", "debug"),
    ("NOTICE: cache rebuilt", "info"),
    # words in the middle of a message are never levels
    ("no error found", "info"),
    ("2026-06-05 10:00:00 no error found", "info"),
    ("2026-06-05 10:00:00 sent an alert to the on-call team", "info"),
    ("Alert rules reloaded", "info"),
    ("Sending ALERT to ops", "info"),
    ("the error.log file was rotated", "info"),
    ("Errors: 0, warnings: 0", "info"),
    ("error.log rotated", "info"),
    ("E: single letters alone are not levels", "info"),
    ("", "info"),
    ("   ", "info"),
]


@pytest.mark.parametrize(("line", "level"), LEVEL_TABLE)
def test_level_of_real_world_lines(line: str, level: str) -> None:
    assert parse_line(line, READ, UTC)[0] == level


def test_table_is_large_and_covers_every_level() -> None:
    assert len(LEVEL_TABLE) >= 40
    assert {level for _, level in LEVEL_TABLE} == {"debug", "info", "warn", "error"}


@pytest.mark.parametrize(("word", "level"), [
    ("WARNING", "warn"), ("wrn", "warn"), ("ERR", "error"), ("FATAL", "error"),
    ("critical", "error"), ("CRIT", "error"), ("panic", "error"), ("EMERG", "error"),
    ("alert", "error"), ("SEVERE", "error"), ("TRACE", "debug"), ("NOTICE", "info"),
    ("DBG", "debug"), ("INF", "info"), ("Information", "info"), ("debug3", "debug"),
    ("message", None), ("E", None),
])
def test_synonyms(word: str, level: str | None) -> None:
    assert level_of(word) == level


@pytest.mark.parametrize(("word", "level"), [
    ("WARNING", "warn"), ("ERR", "error"), ("CRIT", "error"), ("EMERG", "error"),
    ("ALERT", "error"), ("SEVERE", "error"), ("TRACE", "debug"), ("NOTICE", "info"),
    ("DBG", "debug"), ("WRN", "warn"), ("FATAL", "error"), ("PANIC", "error"),
])
def test_synonyms_in_each_position(word: str, level: str) -> None:
    assert parse_line(f"[{word}] x", READ)[0] == level
    assert parse_line(f"{word}: x", READ)[0] == level
    assert parse_line(f"2026-06-05 10:00:00 {word} x", READ)[0] == level
    assert parse_line(f"level={word.lower()} msg=x", READ)[0] == level
    assert parse_line(f'{{"level": "{word.lower()}"}}', READ)[0] == level


def test_prose_words_need_a_level_slot() -> None:
    assert parse_line("alert: disk", READ)[0] == "error"  # a colon right after: a label
    assert parse_line("alert the team", READ)[0] == "info"
    assert parse_line("Critical section entered", READ)[0] == "info"
    assert parse_line("[notice] x", READ)[0] == "info"


def test_numeric_levels() -> None:
    assert parse_line('{"level": 3}', READ)[0] == "error"  # syslog severity (GELF)
    assert parse_line('{"level": 7}', READ)[0] == "debug"
    assert parse_line('{"level": 20}', READ)[0] == "debug"  # bunyan/pino
    assert parse_line('{"level": 40}', READ)[0] == "warn"
    assert parse_line('{"level": 60}', READ)[0] == "error"
    assert parse_line('{"level": 99}', READ)[0] == "info"
    assert parse_line('{"level": true}', READ)[0] == "info"
    assert parse_line('{"level": "E"}', READ)[0] == "error"  # a letter in a level field


def test_deeply_nested_json_falls_through() -> None:
    line = "{" + '"a":[' * 100_000 + "]" * 100_000 + "}"
    assert parse_line(line, READ) == ("info", READ)


# --- time ---------------------------------------------------------------------------------------


def at(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0,
       micro: int = 0, tz: timezone = UTC) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)


TIME_TABLE = [
    ("2026-06-05T10:00:00Z started", at(2026, 6, 5, 10)),
    ("2026-06-05T10:00:00.123456789Z started", at(2026, 6, 5, 10, 0, 0, 123456)),
    ("2026-06-05T10:00:00+02:00 started", at(2026, 6, 5, 8)),
    ("2026-06-05T04:00:00-0500 ERROR x", at(2026, 6, 5, 9)),
    ("2026-06-05 10:00:00.5 UTC [1] LOG:  x", at(2026, 6, 5, 10, 0, 0, 500000)),
    # zone-less: local time of the agent host (UTC+2 here)
    ("2026-06-05 10:00:00 ERROR x", at(2026, 6, 5, 10, tz=PLUS2)),
    ("2026-06-05 10:00:00,250 - app - INFO - x", at(2026, 6, 5, 10, 0, 0, 250000, tz=PLUS2)),
    ("2026/06/05 10:00:00 [error] 1#1: x", at(2026, 6, 5, 10, tz=PLUS2)),
    ("Jun  5 10:00:00 web-01 cron[1]: x", at(2026, 6, 5, 10, tz=PLUS2)),
    ("E0605 10:00:00.000001    1 x.go:1] x", at(2026, 6, 5, 10, 0, 0, 1, tz=PLUS2)),
    ("10:00:00.123 [main] INFO x", at(2026, 6, 5, 10, 0, 0, 123000, tz=PLUS2)),
    ("[Fri Jun 05 10:00:00.5 2026] [core:error] x", at(2026, 6, 5, 10, 0, 0, 500000, tz=PLUS2)),
    ("[05-Jun-2026 10:00:00 UTC] PHP Notice:  x", at(2026, 6, 5, 10)),
    ("[2026-06-05 10:00:00 +0000] [1] [INFO] x", at(2026, 6, 5, 10)),
    ('1.2.3.4 - - [05/Jun/2026:02:00:00 -0700] "GET / HTTP/1.1" 200 1 "-" "-"', at(2026, 6, 5, 9)),
    # JSON and logfmt fields; epoch numbers by magnitude
    ('{"time":"2026-06-05T10:00:00+02:00","msg":"x"}', at(2026, 6, 5, 8)),
    ('{"ts":1780653600.25,"msg":"x"}', at(2026, 6, 5, 10, 0, 0, 250000)),
    ('{"time":1780653600000,"msg":"x"}', at(2026, 6, 5, 10)),
    ('{"timestamp":1780653600000000,"msg":"x"}', at(2026, 6, 5, 10)),
    ('{"@timestamp":"1780653600000000000","msg":"x"}', at(2026, 6, 5, 10)),
    ('{"@t":"2026-06-05T10:00:00Z","@mt":"serilog"}', at(2026, 6, 5, 10)),
    ('{"t":{"$date":"2026-06-05T10:00:00.000+00:00"},"s":"I","msg":"x"}', at(2026, 6, 5, 10)),
    ("time=2026-06-05T10:00:00Z level=info msg=x", at(2026, 6, 5, 10)),
    ('ts="2026-06-05 10:00:00" level=info msg=x', at(2026, 6, 5, 10, tz=PLUS2)),
    ('2026-06-05T10:00:00.000Z stdout F {"time":"2020-01-01T00:00:00Z"}', at(2026, 6, 5, 10)),
    # nothing usable: the read time
    ("no timestamp here", READ),
    ('{"time": 42, "msg": "a duration, not a time"}', READ),
    ('{"time": "yesterday"}', READ),
    ("2026-13-45 10:00:00 ERROR impossible date", READ),
    ("2026-06-05T10:00:00+25:00 impossible offset", READ),
    ("2026-06-05T11:00:00Z too far in the future", READ),
]


@pytest.mark.parametrize(("line", "expected"), TIME_TABLE)
def test_time_of_line(line: str, expected: datetime) -> None:
    stamp = parse_line(line, READ, PLUS2)[1]
    assert stamp == expected
    assert stamp.tzinfo == UTC


def test_time_just_inside_the_future_guard_is_kept() -> None:
    inside = READ + MAX_AHEAD
    line = inside.strftime("%Y-%m-%dT%H:%M:%SZ ok")
    assert parse_line(line, READ)[1] == inside
    assert parse_line((inside + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      READ)[1] == READ


def test_yearless_stamp_read_after_new_year_belongs_to_last_year() -> None:
    read = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert parse_line("Dec 31 23:59:59 host app: x", read, UTC)[1] == at(2026, 12, 31, 23, 59, 59)
    assert parse_line("Jan  1 00:00:10 host app: x", read, UTC)[1] == at(2027, 1, 1, 0, 0, 10)


def test_clock_only_stamp_read_after_midnight_belongs_to_yesterday() -> None:
    read = datetime(2026, 6, 6, 0, 0, 5, tzinfo=UTC)
    assert parse_line("23:59:59.900 [main] INFO x", read, UTC)[1] == \
        at(2026, 6, 5, 23, 59, 59, 900000)


def test_zone_less_time_uses_host_zone_by_default() -> None:
    expected = datetime(2026, 6, 5, 10, 0, 0).astimezone().astimezone(UTC)
    assert parse_line("2026-06-05 10:00:00 INFO x", READ + timedelta(days=1))[1] == expected
