"""argparse ``type=`` checks shared by the commands: a bad value is an argparse error naming the
option ("argument --batch-size: must be at least 1, got 0"), before any work starts; and the same
checks for the settings of the classes the Lightning CLI builds (:class:`ConfigError` naming the
setting as the YAML spells it: "data.max_batch_size must be at least 1 ..., got 0")."""

from __future__ import annotations

import argparse
import copy
import math
import numbers
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from speechsum.utils.url_secrets import without_url_credentials, without_url_secrets


def at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after an option's help only where it says something: not after a required
    option, a None or False default, or help that already gives its default ("(default: None)"
    after ``--manifest``, which has none, read as if it were optional)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.required or action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def user_path(text: str) -> str:
    """argparse ``type=`` of a path option: a leading ``~`` (``~/x``, ``~user/x``) is the home folder. The shell
    expands it only at the start of a word, so ``--out=~/student`` or a quoted ``'~/x'`` arrived as it is: before
    2026-12-07 ``speechsum export --out=~/student`` wrote a folder named ``~`` in the working directory."""
    return os.path.expanduser(text)


def bounds_text(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> str:
    """``above 0 and at most 1``: the interval a number must lie in, in words."""
    text = f"{'above' if low_open else 'at least'} {low:g}"
    if high < math.inf:
        text += f" and {'below' if high_open else 'at most'} {high:g}"
    return text


def in_bounds(value: float, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> bool:
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return math.isfinite(value) and above and below


def number(low: float, high: float = math.inf, low_open: bool = False, what: str = "a number") -> Callable[[str], float]:
    """A finite float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not in_bounds(value, low, high, low_open):
            raise argparse.ArgumentTypeError(f"must be {what} {bounds_text(low, high, low_open)}, got {text}")
        return value

    return parse


class ConfigError(ValueError):
    """A setting of a stage, data module or backbone that cannot work; the message names it as the
    config spells it. ``speechsum`` ends with the message (exit 2), not a traceback."""


class ConfigFieldError(ConfigError):
    """A field of a setting that cannot work: ``setting`` (``llm``; "" for a setting of its own, e.g.
    ``end_of_turn``), ``path`` the field's dotted place below it, ``field`` its name as written,
    ``value`` its value as the config writes it (None: not repeated). The command line finds the
    field's ``FILE:LINE`` in the config files and puts it after the name (:meth:`located`)."""

    def __init__(self, setting: str, path: str, problem: str, value: object = None):
        self.setting, self.path, self.field, self.problem = setting, path, path.rsplit(".", 1)[-1], problem
        self.value = value
        super().__init__(self.located(""))

    def located(self, where: str) -> str:
        """The message, with ``where`` (``FILE:LINE``, "" for none) after the field's name."""
        name = f"{self.setting}.{self.path}" if self.setting else self.path
        return f"{name}{f' ({where})' if where else ''}: {self.problem}"


def error_in_chain(err: BaseException | None, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first error of ``kinds`` in ``err``'s chain (itself, then its causes or contexts: jsonargparse
    and Lightning wrap the errors of the classes they build), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEY_VARIABLE_HINT = ("expected the name of the environment variable holding the API key (letters, digits and _, "
                     "e.g. OPENAI_API_KEY), not the key itself: export the key in a variable and give its name "
                     "(the value given is not repeated here)")


def key_variable(text: str) -> str:
    """argparse ``type=`` of ``--api-key-env``: a variable's name; a key given there (``sk-…``) is
    refused without being echoed, as it would be by every message naming the variable."""
    if not ENV_VAR_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(KEY_VARIABLE_HINT)
    return text


def masked_credentials(value: object) -> object:
    """``value`` (a config: mappings, lists, namespaces, strings) with the credentials of every URL in its
    strings masked (:func:`without_url_credentials`), for what is saved or logged (a run folder's configs,
    hyperparameters, W&B); ``value`` itself, not a copy, where nothing is masked."""
    if isinstance(value, str):
        return without_url_credentials(value) if "@" in value else value
    if isinstance(value, argparse.Namespace):
        fields = vars(value)
        masked = {key: masked_credentials(item) for key, item in fields.items()}
        if all(masked[key] is item for key, item in fields.items()):
            return value
        replaced = copy.copy(value)
        for key, item in masked.items():
            if item is not fields[key]:
                setattr(replaced, key, item)
        return replaced
    if isinstance(value, dict):
        masked = {key: masked_credentials(item) for key, item in value.items()}
        if all(masked[key] is item for key, item in value.items()):
            return value
        replaced = copy.copy(value)  # of its own type (Lightning's AttributeDict)
        replaced.update(masked)
        return replaced
    if isinstance(value, list | tuple):
        items = [masked_credentials(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
    return value


@contextmanager
def argv_without_credentials() -> Iterator[None]:
    """``sys.argv`` with the credentials of every URL in it masked (:func:`without_url_secrets`) inside the block:
    for a library that records the command line itself (W&B's run metadata, ``args``, read as a run starts);
    a ``--...base_url http://user:password@host/v1`` option went whole into the offline run and its upload."""
    given = list(sys.argv)
    sys.argv[:] = [without_url_secrets(arg) for arg in given]
    try:
        yield
    finally:
        sys.argv[:] = given


CLIENT_ROUTES = ("/chat/completions", "/completions")  # what a client appends to base_url (a copied request URL)


def base_url_problem(url: object) -> str | None:
    """:func:`_unmasked_url_problem` with the URL's credentials masked whatever its form (``http://***@host``,
    ``***@host:8000/v1`` without a scheme, ``?api_key=***``): the message goes to stderr and so to logs (the
    pipeline's stage logs), where a ``user:password@`` was shown whole."""
    problem = _unmasked_url_problem(url)
    return problem and without_url_secrets(problem, str(url))


def _unmasked_url_problem(url: object) -> str | None:
    """Why ``url`` cannot be an OpenAI-compatible endpoint's base URL, with what to write: no http(s)
    scheme, a space inside or at an end, a query (``?api-version=…``: the client put its routes after
    it), no host, credentials masked (``***@``: copied from a saved config, they answered 401 "export a
    valid key"), a port that is no number from 1 to 65535, a backslash or an empty path segment (``/v1//``)
    in its path, a route the client adds itself (or ``/v1/models``) at its end (a request URL copied from
    docs: every request got a 404); None when it can be (the client's own error for these was a bare
    "Connection error.", retried in vain, or only after sampling)."""
    text = str(url).strip()
    if not text.lower().startswith(("http://", "https://")):
        return (f"{str(url)!r} is not an http:// or https:// URL; write it whole, e.g. "
                f"http://{text.split('://')[-1] or '127.0.0.1:8000/v1'}")
    # at either end too: the client sent it (" …/v1" unreachable, "…/v1 " asked /v1%20/chat/completions)
    if (space := next((index for index, char in enumerate(str(url)) if char.isspace()), None)) is not None:
        return f"{str(url)!r} holds a space or line end (at character {space}): write the URL without it"
    parts = urllib.parse.urlsplit(text)
    if parts.query or "?" in text.split("#", 1)[0]:  # the client puts its routes after it: /v1/?api-version=…chat/…
        return (f"{str(url)!r} holds a query (?{parts.query}), which the client would put inside the path of every "
                f"request (it adds /chat/completions after base_url): write the API's root without it, "
                f"{urllib.parse.urlunsplit(parts._replace(query='', fragment=''))} (Azure OpenAI: "
                "https://RESOURCE.openai.azure.com/openai/v1/, which takes no api-version)")
    if not parts.hostname:
        return f"{str(url)!r} names no host: write it whole, e.g. {parts.scheme}://127.0.0.1:8000/v1"
    if parts.username == "***" and parts.password is None:  # copied from a run folder (masked_credentials)
        return (f"{str(url)!r} holds credentials masked as ***@, as a run folder's saved configs write them: write the "
                "URL with its user:password@ as your own config has it")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return (f"{str(url)!r} has a port that is no number from 1 to 65535: give the endpoint's port, e.g. "
                f"{parts.scheme}://{parts.hostname}:8000{parts.path or '/v1'}")
    if "\\" in parts.path:  # sent as it is, before /chat/completions: a 404
        return f"{str(url)!r} holds a backslash: URLs use /, e.g. {text.replace(chr(92), '/').rstrip('/')}"
    if "//" in parts.path:  # the client asked /v1//chat/completions: a 404 (or a redirect) for every request
        single = urllib.parse.urlunsplit(parts._replace(path=re.sub("/{2,}", "/", parts.path)))
        return f"{str(url)!r} holds an empty path segment (//): write it with single slashes, {single}"
    path = parts.path.rstrip("/")
    if path.lower().endswith("/v1/models"):  # "GET base_url/models lists them", copied with its route
        return (f"{str(url)!r} ends in /models, the route that lists the models, which the client adds to base_url "
                f"itself: write the API's root, {text[:text.lower().rindex('/models')]}")
    if route := next((r for r in CLIENT_ROUTES if path.lower().endswith(r) and
                      (r == "/chat/completions" or path.lower().endswith("/v1" + r))), None):
        return (f"{str(url)!r} ends in {route}, which the client adds to base_url itself (it would ask "
                f"{path}{route}): write the API's root, {text[:text.lower().rindex(route)]}")
    return None


def basic_auth_replaces_key(base_url: str | None, key_option: str, variable: str, url_option: str) -> str | None:
    """The warning for ``base_url`` with ``user:password@`` (or ``TOKEN@``) while environment variable ``variable``
    (named by setting ``key_option``) holds an API key: the HTTP client sends the URL's credentials as Basic auth
    in the one Authorization header, in the key's place. Right for a server behind Basic auth alone; a server
    that checks the key answers 401 "Missing API key". None without both. Credentials masked."""
    if not base_url or not urllib.parse.urlsplit(base_url.strip()).username:
        return None
    return without_url_secrets(
        f"{url_option} {base_url} holds user:password@, sent as HTTP Basic auth in the request's one Authorization "
        f"header, so the API key in {variable} ({key_option}) is not sent. Fine for a server behind Basic auth alone; "
        f"a server that checks the key answers 401 'Missing API key': for it, remove user:password@ from {url_option}. "
        f"(Naming in {key_option} a variable that is not set silences this.)", base_url)


def endpoint_url(text: str) -> str:
    """argparse ``type=`` of an endpoint option (``--judge-base-url``): an http(s) URL with a host
    (:func:`base_url_problem`), as given; ``env:VARIABLE`` reads it from that environment variable (a URL
    with ``user:password@``: on a command line every user of the machine sees it, in ``ps``)."""
    if text.startswith("env:"):
        variable = text[len("env:"):]
        if not ENV_VAR_NAME.fullmatch(variable):
            raise argparse.ArgumentTypeError(f"{text!r}: after env: write the name of an environment variable "
                                             "holding the URL, e.g. env:SPEECHSUM_JUDGE_BASE_URL")
        if not os.environ.get(variable, "").strip():
            raise argparse.ArgumentTypeError(f"{text!r}: the environment variable {variable} {unset_text(variable)}: "
                                             f"export the endpoint's URL in it (export {variable}=http://...)")
        text = os.environ[variable]
        if problem := base_url_problem(text):
            raise argparse.ArgumentTypeError(f"${variable}: {problem}")
        return text
    if problem := base_url_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def key_problem(key: str, variable: str) -> str | None:
    """Why the API ``key`` (stripped) of environment variable ``variable`` cannot go into an HTTP header
    (a space, a line end or a non-ASCII letter inside), naming the variable, never the key; else None."""
    bad = next((index for index, char in enumerate(key) if not "!" <= char <= "~"), None)
    if bad is None:
        return None
    return (f"the API key in ${variable} holds a character an HTTP header cannot carry (a space, a line end or a "
            f"non-ASCII letter) at position {bad}: export the key exactly as issued")


def unset_text(variable: str) -> str:
    """How a key variable without a key is described: "is not set", or "is set but empty" (an export of
    an empty or blank value: "not set" sent the user to look for an export that is there)."""
    return "is set but empty" if variable in os.environ else "is not set"


# a setting or option named like an API key (api_key, openai_api_key, --api-key; not api_key_env): never taken
KEY_SETTING = re.compile(r"(?i)(?:[a-z0-9]+[_-])*api[_-]?key")
# such a setting's value where jsonargparse shows what it was given: 'api_key': '…', api_key='…', NestedArg(…api_key', val='…')
KEY_VALUE = re.compile(r"""(?i)(api[_-]?key'?(?:\s*[:=]\s*|', val=))(['"])(?:(?!\2).)*\2""")


def key_option_problem(args: list[str], instead: str | None) -> str | None:
    """``--X.api_key: ...`` for the first option of a command line ``args`` named like an API key
    (:data:`KEY_SETTING`, ``--api-key=sk-…`` too), saying to give it in the environment (``instead``: the
    option or setting that names the variable; None: the command has none of its own); None when there is none.
    The value is never repeated (argparse's "unrecognized arguments" and jsonargparse's errors showed it)."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and KEY_SETTING.fullmatch(name.rsplit(".", 1)[-1].lstrip("-")):
            return f"{name}: {key_advice(instead)}"
    return None


def key_advice(instead: str | None) -> str:
    """Why an API key given as a setting is refused, and what to do (``instead`` names the variable)."""
    what = ("export it in an environment variable and give that variable's name with "
            f"{instead or 'the setting that takes one (api_key_env in a YAML, --api-key-env of a tool)'}")
    return ("an API key is never taken from the command line or a config file (it would be kept in shell history, "
            f"the process list, logs, saved configs, checkpoints and W&B; the value given is not repeated here): {what}")


def without_secrets(text: str) -> str:
    """``text`` (an argument parser's message, which echoes the values it was given) with URL credentials
    (whatever the URL's form: :func:`without_url_secrets`) and the values of settings named like an API key masked."""
    return KEY_VALUE.sub(r"\1\2***\2", without_url_secrets(text))


def check_key_variable(setting: str, name: str | None) -> None:
    """:class:`ConfigError` when ``name`` (the setting ``setting``, e.g. ``api_key_env``) is not a
    variable's name: a key put there would be saved in configs and checkpoints and shown in errors."""
    if name is not None and not ENV_VAR_NAME.fullmatch(name):
        raise ConfigError(f"{setting}: {KEY_VARIABLE_HINT}")


def check_count(name: str, value: int, low: int, note: str = "") -> None:
    """``value`` (an integer setting called ``name``) is an integer of at least ``low``; ``note``: e.g.
    what null means (the Python API takes any value: 3.5 failed deep inside torch, True passed as 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer of at least {low}{note}, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be at least {low}{note}, got {value!r}")


def check_number(name: str, value: float, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False, note: str = "") -> None:
    """``value`` (a real-valued setting called ``name``) is a finite number within the bounds (a str
    such as "30" raised a TypeError from the comparison, and True passed as 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not in_bounds(value, low, high, low_open,
                                                                                         high_open):
        raise ConfigError(f"{name} must be a number {bounds_text(low, high, low_open, high_open)}{note}, got {value!r}")


# Upper bounds of counts a user types: past them a command would start and then exhaust the machine
# (``--threads 100000``: 100,000 OpenMP threads per command; ``--judge-workers 10**6``: a thread per
# request; ``--bootstrap-resamples 10**12``: one array of resamples x examples), each an argparse error
# naming the option instead.
MAX_THREADS = 1024  # CPU threads: more than any one machine has
MAX_WORKERS = 256  # requests or processes at once
MAX_ATTEMPTS = 100  # tries of one request
MAX_DOCUMENTS = 100_000  # benchmark documents per split (a WAV of 0.5-2 MB each)
MAX_TEXT_DOCUMENTS = 10_000_000  # text-only documents (no audio: ~1 kB each)
MAX_RESAMPLES = 1_000_000  # bootstrap resamples per confidence interval
MAX_TOKENS = 1_048_576  # tokens one answer may have (no model's context is longer)
MAX_BATCH = 65_536  # examples per batch


def port(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0-65535, got {value}")
    return value


positive_seconds = number(0.0, low_open=True, what="a number of seconds")
share = number(0.0, 1.0, what="a share")  # of documents, 0-1
sampling_temperature = number(0.0, low_open=True)
# temperatures under this decode greedily (vLLM's _SAMPLING_EPS): logits divided by 1e-40 overflow
# float32 to ±inf, and the argmax over several inf scores is the first id, not the likeliest one
GREEDY_BELOW = 1e-5
nucleus_top_p = number(0.0, 1.0, low_open=True)
samples_per_input = at_least(2, 64)  # a preference pair needs two
numpy_seed = at_least(0, 2**32 - 1)  # what Lightning's seed_everything (numpy's legacy seeding) takes


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """``value`` (a setting called ``name``) is one of ``choices``: the Python API takes any str, and
    a value compared only with one choice (``on_bad_example == "error"``) was silently the other."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
