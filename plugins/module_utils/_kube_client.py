# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: API access through the ``kubernetes`` Python client, configured from kubernetes.core's
authentication options.

Not a public API; may change without notice.

The options are those of kubernetes.core's doc fragment ``k8s_auth_options`` (its ``AUTH_ARG_SPEC``, in
kubernetes.core plugins/module_utils/args_common.py), so one ``module_defaults`` entry sets them for kubernetes.core's
modules and ours alike. They are resolved as kubernetes.core resolves them (plugins/module_utils/k8s/client.py,
``_create_auth_spec`` and ``_create_configuration``):

* an option left unset is read from ``K8S_AUTH_<OPTION>`` or ``K8S_AUTH_<client name>`` (``K8S_AUTH_VERIFY_SSL``,
  ``K8S_AUTH_SSL_CA_CERT``, ``K8S_AUTH_CERT_FILE``, ``K8S_AUTH_KEY_FILE``), ``proxy_headers`` from
  ``K8S_AUTH_PROXY_HEADERS_<KEY>``, ``impersonate_groups`` from a comma-separated ``K8S_AUTH_IMPERSONATE_GROUPS``;
  a boolean from the environment is false for ``0``, ``false`` and ``no``;
* ``host`` with ``username`` and ``password``, ``api_key``, or ``client_cert`` and ``client_key`` needs no kubeconfig;
  else ``kubeconfig`` (a path, several joined with ``os.pathsep``, or a mapping) or ``context`` loads the kubeconfig;
  else the in-cluster service account is tried, then the default kubeconfig (``$KUBECONFIG``, ``~/.kube/config``);
* the options given then override what was loaded (``api_key`` as a bearer token), here also after each token refresh
  of the kubeconfig loader, which writes its own settings again before every request.

Where this differs, on purpose: the kubeconfig is checked before the client reads it (``check_kubeconfig``: the
client answers odd files with any exception type), so a bad file is named with its line; the configuration is a new
``Configuration``, not the process-wide default; ``username``/``password`` are sent as HTTP basic authentication,
as the client's kubeconfig loader sends a kubeconfig user's; ``impersonate_groups`` without ``impersonate_user`` is
refused before any request (the API server refuses it: "The username to impersonate must always be specified",
https://kubernetes.io/docs/reference/access-authn-authz/authentication/#user-impersonation).

Requests go through the client's own request path (URL, query, default headers, the bearer token with its refresh
hook), on both generations of the generated client: ``param_serialize`` + ``call_api`` (kubernetes >= 36) and the
older ``call_api(resource_path, method, ...)``.
"""
from __future__ import annotations

import os
import traceback
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._strict_yaml import MAX_BYTES, StrictYamlError, brief, line_of, load

# (kubernetes.config, kubernetes.client), or None when the package is missing (module_api_client says so)
_KUBERNETES: Optional[Tuple[Any, Any]]
try:
    from kubernetes import client as _kube_client_package
    from kubernetes import config as _kube_config_package
except ImportError:
    _KUBERNETES = None
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
else:
    _KUBERNETES = (_kube_config_package, _kube_client_package)
    KUBERNETES_IMPORT_ERROR = ""

try:
    from urllib3.util import make_headers  # a dependency of the kubernetes client
except ImportError:  # pragma: no cover - without it the kubernetes client is missing too, and the module says so first
    HAS_URLLIB3 = False
else:
    HAS_URLLIB3 = True

# option -> the kubernetes client's name for it (its Configuration attribute; kubernetes.core's AUTH_ARG_MAP), which
# K8S_AUTH_<NAME> may also give
CLIENT_NAMES = {
    "kubeconfig": "kubeconfig", "context": "context", "host": "host", "api_key": "api_key", "username": "username",
    "password": "password", "validate_certs": "verify_ssl", "ca_cert": "ssl_ca_cert", "client_cert": "cert_file",
    "client_key": "key_file", "proxy": "proxy", "no_proxy": "no_proxy", "proxy_headers": "proxy_headers",
    "persist_config": "persist_config", "impersonate_user": "impersonate_user", "impersonate_groups": "impersonate_groups",
}
BOOL_OPTIONS = ("validate_certs", "persist_config")
PROXY_HEADER_KEYS = ("proxy_basic_auth", "basic_auth", "user_agent")
USER_AGENT = "gpu-ops-serving-verify"
_FALSE = ("0", "false", "no")


class KubeClientError(Exception):
    """The client cannot be configured from the options given; the message says which and why."""


class KubeRequestError(Exception):
    """A request got no answer (connection refused, TLS, timeout); the message names the request."""


class KubeconfigError(ValueError):
    """A kubeconfig the module cannot use; the message names the file, the line where it can, and the fix."""


def _named_list(config: Mapping[str, Any], key: str, inner: str, path: str, required: bool) -> Dict[str, Mapping[str, Any]]:
    """``clusters``/``contexts``/``users``: a list of ``{name, <inner>: {...}}``, by name."""
    raw = config.get(key)
    if raw is None and not required:
        return {}
    if not isinstance(raw, list):
        at = line_of(config, key)
        where = f"{path}, line {at}" if at else path
        what = "missing" if raw is None else f"{type(raw).__name__}, not a list"
        raise KubeconfigError(f"{where}: '{key}' is {what}; a kubeconfig lists its {key} as '- name: ...' entries with a '{inner}:' mapping")
    out: Dict[str, Mapping[str, Any]] = {}
    for pos, item in enumerate(raw, start=1):
        at = line_of(item)
        where = f"{path}, line {at}" if at else f"{path}, {key} entry {pos}"
        if not isinstance(item, Mapping):
            raise KubeconfigError(f"{where}: {key} entry {pos} must be a mapping with 'name' and '{inner}', not {brief(item)}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise KubeconfigError(f"{where}: {key} entry {pos} needs a non-empty string 'name', not {brief(name)}")
        if name in out:
            raise KubeconfigError(f"{where}: {key} entry {name!r} is defined twice; kubectl would use the first only: rename or remove one")
        body = item.get(inner)
        if not isinstance(body, Mapping):
            raise KubeconfigError(f"{where}: {key} entry {name!r} needs a '{inner}:' mapping, not {brief(body)}")
        out[name] = body
    return out


def default_kubeconfig() -> Optional[str]:
    """The file the kubernetes client reads when no kubeconfig is given: $KUBECONFIG (one path), else ~/.kube/config;
    None when that is a list of files (the client merges them) or no file exists (the in-cluster account is used)."""
    env = os.environ.get("KUBECONFIG", "")
    if os.pathsep in env:
        return None
    path = os.path.expanduser(env or "~/.kube/config")
    return path if os.path.isfile(path) else None


def check_kubeconfig(data: bytes, path: str, context: Optional[str] = None) -> str:
    """Check a kubeconfig file's content before the kubernetes client reads it (which answers odd files with
    a Python exception or accepts a server that is no URL). Returns the context used. Refuses, naming the file
    and the line: binary, non-UTF-8 or non-YAML content, duplicate keys, and all that check_kubeconfig_data refuses."""
    try:
        config = load(data, path)
    except StrictYamlError as exc:
        raise KubeconfigError(str(exc)) from None
    return check_kubeconfig_data(config, path, context)


def check_kubeconfig_data(config: Any, path: str, context: Optional[str] = None) -> str:
    """Check a loaded kubeconfig (a file's, or the mapping given as the kubeconfig option); ``path`` names it in
    messages. Returns the context used. Refuses: no mapping, missing or malformed ``clusters``/``contexts``/``users``,
    an unknown context, cluster or user, a server that is not an http(s) URL."""
    if config is None:
        raise KubeconfigError(f"{path}: empty; a kubeconfig needs clusters, contexts and users (kubectl config view --raw shows one)")
    if not isinstance(config, Mapping):
        raise KubeconfigError(
            f"{path}: must be a mapping (apiVersion: v1, kind: Config, clusters, contexts, users), not {type(config).__name__} "
            f"({brief(config)})"
        )
    clusters = _named_list(config, "clusters", "cluster", path, required=True)
    contexts = _named_list(config, "contexts", "context", path, required=True)
    users = _named_list(config, "users", "user", path, required=False)
    current = config.get("current-context")
    name = context or current
    if not name:
        raise KubeconfigError(
            f"{path}: no context given and no current-context set; set the module's context (or K8S_AUTH_CONTEXT) to one of: "
            f"{', '.join(sorted(contexts)) or 'none defined'}"
        )
    if not isinstance(name, str) or name not in contexts:
        which = "context" if context else "current-context"
        raise KubeconfigError(
            f"{path}: {which} {brief(name)} is not defined; the kubeconfig's contexts are: {', '.join(sorted(contexts)) or 'none'}"
        )
    ctx = contexts[name]
    cluster_name = ctx.get("cluster")
    if not isinstance(cluster_name, str) or cluster_name not in clusters:
        raise KubeconfigError(
            f"{path}: context {name!r} names cluster {brief(cluster_name)}, which is not defined; clusters: "
            f"{', '.join(sorted(clusters)) or 'none'}"
        )
    user = ctx.get("user")
    if user is not None and (not isinstance(user, str) or user not in users):
        raise KubeconfigError(
            f"{path}: context {name!r} names user {brief(user)}, which is not defined; users: {', '.join(sorted(users)) or 'none'}"
        )
    server = clusters[cluster_name].get("server")
    parts = urlsplit(server) if isinstance(server, str) else None
    try:
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        port_ok = False
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname or not port_ok:
        at = line_of(clusters[cluster_name], "server")
        where = f"{path}, line {at}" if at else path
        raise KubeconfigError(
            f"{where}: cluster {cluster_name!r} has server {brief(server)}, which is not an https:// URL of the API server "
            "(such as https://10.0.0.1:6443)"
        )
    return name


# --- the options -----------------------------------------------------------------------------------------------

# kubeconfig keys whose values are credentials (users[].user: token, password, client-key-data and
# client-certificate-data; an auth-provider's config: access-token, refresh-token, id-token, client-secret)
_SECRET_KEYS = ("token", "password", "client-key-data", "client-certificate-data", "access-token", "refresh-token", "id-token",
                "client-secret")


def kubeconfig_secrets(config: Any) -> List[str]:
    """The credential strings of a kubeconfig given as a mapping, for the module's ``no_log_values`` (the mapping is an
    option, so it would be returned in ``invocation`` otherwise)."""
    found: List[str] = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key in _SECRET_KEYS and isinstance(value, str) and value:
                found.append(value)
            else:
                found.extend(kubeconfig_secrets(value))
    elif isinstance(config, list):
        for item in config:
            found.extend(kubeconfig_secrets(item))
    return found


def auth_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> Dict[str, Any]:
    """The authentication options in effect: each option given, else its K8S_AUTH_* variable; unset ones left out."""
    auth: Dict[str, Any] = {}
    for option, client_name in CLIENT_NAMES.items():
        value = params.get(option)
        if value is None and option == "proxy_headers":
            found = {key: environ[f"K8S_AUTH_PROXY_HEADERS_{key.upper()}"] for key in PROXY_HEADER_KEYS
                     if f"K8S_AUTH_PROXY_HEADERS_{key.upper()}" in environ}
            value = found or None
        elif value is None:
            raw = environ.get(f"K8S_AUTH_{option.upper()}") or environ.get(f"K8S_AUTH_{client_name.upper()}")
            if raw is not None and option in BOOL_OPTIONS:
                value = raw.lower() not in _FALSE
            elif raw is not None and option == "impersonate_groups":
                value = [group for group in raw.split(",") if group]
            else:
                value = raw
        if option == "proxy_headers" and isinstance(value, Mapping):
            value = {key: v for key, v in value.items() if v is not None} or None  # the suboptions left unset
        if value is not None:
            auth[option] = value
    return auth


def auth_problem(auth: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the options before any request, or None."""
    if auth.get("impersonate_groups") and not auth.get("impersonate_user"):
        return (
            f"impersonate_groups {brief(list(auth['impersonate_groups']))} needs impersonate_user: the API server refuses "
            "to impersonate groups without a user (set impersonate_user, or K8S_AUTH_IMPERSONATE_USER)"
        )
    kubeconfig = auth.get("kubeconfig")
    if kubeconfig is not None and not isinstance(kubeconfig, (str, Mapping)):
        return f"kubeconfig must be a path or a kubeconfig mapping, not {type(kubeconfig).__name__} ({brief(kubeconfig)})"
    return None


def _self_sufficient(auth: Mapping[str, Any]) -> bool:
    """host and credentials: no kubeconfig is read (kubernetes.core: _create_configuration)."""
    return bool(auth.get("host")) and any(all(auth.get(n) for n in names)
                                          for names in (("username", "password"), ("api_key",), ("client_cert", "client_key")))


def _check_file(path: str, context: Optional[str]) -> None:
    """Check one kubeconfig file before the client reads it; KubeconfigError names it (a list of files is merged by the
    client and is not checked here)."""
    try:
        if os.path.getsize(path) > MAX_BYTES:
            raise KubeconfigError(f"{path} is larger than {MAX_BYTES} bytes; is it the right file?")
        with open(path, "rb") as fh:
            check_kubeconfig(fh.read(MAX_BYTES + 1), path, context)
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror}") from None


def _load_kubeconfig(auth: Mapping[str, Any], loader: Any, configuration: Any) -> None:
    kubeconfig = auth.get("kubeconfig")
    context = auth.get("context") or None
    persist = bool(auth.get("persist_config"))
    if isinstance(kubeconfig, Mapping):
        check_kubeconfig_data(kubeconfig, "the kubeconfig given as a mapping", context)
        loader.load_kube_config_from_dict(config_dict=dict(kubeconfig), context=context, client_configuration=configuration,
                                          persist_config=persist)
        return
    path = os.path.expanduser(kubeconfig) if kubeconfig else default_kubeconfig()
    if path and os.pathsep not in path:
        _check_file(path, context)
    loader.load_kube_config(config_file=path or None, context=context, client_configuration=configuration, persist_config=persist)


def describe_source(auth: Mapping[str, Any]) -> str:
    """Where the client's configuration comes from, for messages."""
    kubeconfig = auth.get("kubeconfig")
    if _self_sufficient(auth):
        return f"the API server {auth['host']} (host and credentials given)"
    if isinstance(kubeconfig, Mapping):
        what = "the kubeconfig given as a mapping"
    elif kubeconfig or auth.get("context"):
        what = f"the kubeconfig {kubeconfig or '(default)'}"
    else:
        what = "the in-cluster service account, else the kubeconfig (default)"
    return f"{what} (context {auth.get('context') or 'current'})"


class _HeaderName(str):
    """A header name that compares by identity, so that one header can be sent several times from one dict
    (an ``Impersonate-Group`` header per group, as the API server reads them)."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other


def build_api_client(auth: Mapping[str, Any], loader: Any, client: Any) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``auth`` (auth_settings' result); ``loader`` is ``kubernetes.config``,
    ``client`` is ``kubernetes.client``. Raises KubeClientError naming the source and the cause; a kubeconfig is
    checked (check_kubeconfig) before the client reads it."""
    problem = auth_problem(auth)
    if problem:
        raise KubeClientError(problem)
    where = f"Loading {describe_source(auth)}"
    configuration = client.Configuration()
    try:
        if _self_sufficient(auth):
            pass
        elif auth.get("kubeconfig") or auth.get("context"):
            _load_kubeconfig(auth, loader, configuration)
        else:
            try:
                loader.load_incluster_config(client_configuration=configuration)
            except loader.ConfigException:
                _load_kubeconfig(auth, loader, configuration)
    except KubeconfigError as exc:
        raise KubeClientError(f"{where}: {exc}") from None
    except Exception as exc:  # the client answers odd files with any exception type: name the source instead
        hint = "" if auth.get("kubeconfig") or auth.get("host") else (
            "; not in a pod and no kubeconfig found: set kubeconfig (or K8S_AUTH_KUBECONFIG), or host and credentials")
        raise KubeClientError(f"{where}: {type(exc).__name__}: {exc}{hint}") from None
    _override(configuration, auth)
    api = client.ApiClient(configuration=configuration)
    api.user_agent = USER_AGENT
    if auth.get("impersonate_user"):
        api.set_default_header("Impersonate-User", str(auth["impersonate_user"]))
        for group in auth.get("impersonate_groups") or []:
            api.default_headers[_HeaderName("Impersonate-Group")] = str(group)
    return api


def _override(configuration: Any, auth: Mapping[str, Any]) -> None:
    """The options given override what the kubeconfig or the service account set, also after each refresh: the
    kubeconfig loader's ``refresh_api_key_hook`` (run before every request when the user has a token) writes the
    token, host and certificates again and installs itself anew (kubernetes config/kube_config.py ``_set_config``),
    so it is wrapped, and wrapped again each time it puts itself back."""
    _apply(configuration, auth)
    hooks: List[Any] = [getattr(configuration, "refresh_api_key_hook", None)]
    if hooks[0] is None or not _overrides(auth):
        return

    def refresh(config: Any) -> None:
        hooks[0](config)
        if config.refresh_api_key_hook is not refresh:  # the loader's hook installed itself again
            hooks[0] = config.refresh_api_key_hook
            config.refresh_api_key_hook = refresh
        _apply(config, auth)

    configuration.refresh_api_key_hook = refresh


def _overrides(auth: Mapping[str, Any]) -> bool:
    return any(auth.get(o) is not None for o in ("host", "api_key", "username", "validate_certs", "ca_cert", "client_cert", "client_key",
                                                 "proxy", "no_proxy", "proxy_headers"))


def _apply(configuration: Any, auth: Mapping[str, Any]) -> None:
    if auth.get("host"):
        configuration.host = str(auth["host"]).rstrip("/")
    token = None
    if auth.get("api_key"):
        token = f"Bearer {auth['api_key']}"
    elif auth.get("username") and auth.get("password"):
        configuration.username, configuration.password = str(auth["username"]), str(auth["password"])
        token = make_headers(basic_auth=f"{auth['username']}:{auth['password']}")["authorization"]
    if token is not None:
        # "BearerToken" is the key the client reads first (kubernetes >= 36), "authorization" the one older clients read
        configuration.api_key = {"BearerToken": token, "authorization": token}
    for option, attribute in (("validate_certs", "verify_ssl"), ("ca_cert", "ssl_ca_cert"), ("client_cert", "cert_file"),
                              ("client_key", "key_file"), ("proxy", "proxy"), ("no_proxy", "no_proxy")):
        if auth.get(option) is not None:
            setattr(configuration, attribute, auth[option])
    if auth.get("proxy_headers"):
        configuration.proxy_headers = make_headers(**dict(auth["proxy_headers"]))


# --- requests ----------------------------------------------------------------------------------------------------

_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


def api_request(api: Any, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None,
                timeout: Optional[float] = None) -> Tuple[int, bytes, str]:
    """``method path`` (absolute, "/apis/...") through ``api`` (a kubernetes ApiClient): ``(status, body, content type)``
    for every answer, errors included. Raises KubeRequestError when there is no answer."""
    query_params: List[Tuple[str, str]] = list((query or {}).items())
    try:
        if hasattr(api, "param_serialize"):  # kubernetes >= 36: every status comes back as a RESTResponse
            request = api.param_serialize(method, path, query_params=query_params, header_params=dict(_JSON_HEADERS), body=body,
                                          auth_settings=["BearerToken"])
            resp = api.call_api(*request, _request_timeout=timeout)
            data = resp.read()
            return int(resp.status), _bytes(data), str(resp.getheader("Content-Type") or "")
        # kubernetes < 36: call_api(resource_path, method, ...) raises ApiException for a status >= 400
        resp = api.call_api(path, method, query_params=query_params, header_params=dict(_JSON_HEADERS), body=body,
                            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True, _request_timeout=timeout)
        return int(resp.status), _bytes(resp.data), str(resp.headers.get("Content-Type") or "")
    except Exception as exc:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status > 0:  # ApiException with an answer
            return status, _bytes(getattr(exc, "body", None)), str((getattr(exc, "headers", None) or {}).get("Content-Type") or "")
        # urllib3 MaxRetryError, an SSL error (ApiException status 0), a timeout: the request got no answer
        host = getattr(getattr(api, "configuration", None), "host", "the API server")
        raise KubeRequestError(f"{method} {host}{path}: no answer from the API server: {getattr(exc, 'reason', None) or exc}") from None


def _bytes(data: Any) -> bytes:
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode()


def module_api_client(module: Any, environ: Mapping[str, str]) -> Any:
    """The ``kubernetes.client.ApiClient`` of a module that takes kubernetes.core's authentication options.

    Fails the module naming the cause when the ``kubernetes`` package is missing or the options or the kubeconfig are
    wrong; the credentials of a kubeconfig given as a mapping are added to its ``no_log_values`` first."""
    if _KUBERNETES is None:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
        return None  # fail_json exits; for a caller that stubs it
    auth = auth_settings(module.params, environ)
    module.no_log_values.update(kubeconfig_secrets(auth.get("kubeconfig")))
    try:
        return build_api_client(auth, _KUBERNETES[0], _KUBERNETES[1])
    except KubeClientError as exc:
        module.fail_json(msg=str(exc))
        return None
