"""Remote object stores in Rust: the zarr-python stores users already have, mapped to the core's
object-store backend (S3, GCS, Azure Blob Storage, HTTP through the ``object_store`` crate).

- ``zarr.storage.ObjectStore`` wrapping an obstore store (``S3Store``, ``GCSStore``,
  ``AzureStore``, ``HTTPStore``): rebuilt in Rust from the obstore store's own configuration
  (bucket, prefix, credentials, client and retry options).
- ``zarr.storage.FsspecStore`` on s3fs, gcsfs, adlfs or fsspec's HTTP file system: its
  ``storage_options`` mapped to the builder's configuration keys.

What cannot be mapped (a custom session or credential callback, an option we do not know) is not
guessed at: :func:`object_handle` returns the reason, and the caller falls back to reaching the
store through zarr-python (the pipeline logs the reason, and raises it in strict mode).

Handles are cached by configuration, so every array of a bucket shares one HTTP connection pool.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparsezarr import _lib
from sparsezarr._settings import Settings

logger = logging.getLogger("sparsezarr")

_CACHE: OrderedDict[tuple[Any, ...], _lib.Store] = OrderedDict()
_CACHE_SIZE = 64
_LOCK = threading.Lock()

# fsspec / s3fs options that change nothing about where or how the bytes are fetched.
_IGNORED = {
    "asynchronous",
    "loop",
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
    "default_block_size",
    "default_fill_cache",
    "default_cache_type",
    "cache_regions",
    "fixed_upload_size",
    "auto_mkdir",
}


def _unmapped(left: dict[str, Any], lib: str, client: str) -> str | None:
    """Why options that are left over cannot be used (None if all were mapped or harmless)."""
    names = sorted(k for k in left if k not in _IGNORED)
    return f"{lib} options {names} cannot be mapped to the Rust {client} client" if names else None


def _s3_options(so: dict[str, Any]) -> dict[str, str] | str:
    out: dict[str, str] = {}
    so = dict(so)
    client_kwargs = dict(so.pop("client_kwargs", None) or {})
    config_kwargs = dict(so.pop("config_kwargs", None) or {})
    endpoint = so.pop("endpoint_url", None) or client_kwargs.pop("endpoint_url", None)
    region = client_kwargs.pop("region_name", None) or so.pop("region_name", None)
    for name, key in (("key", "aws_access_key_id"), ("secret", "aws_secret_access_key"), ("token", "aws_session_token")):
        value = so.pop(name, None)
        if value is not None:
            out[key] = str(value)
    if so.pop("anon", False):
        out["aws_skip_signature"] = "true"
    if so.pop("requester_pays", False):
        out["aws_request_payer"] = "true"
    use_ssl = so.pop("use_ssl", True)
    if endpoint:
        out["aws_endpoint"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["aws_allow_http"] = "true"
    elif not use_ssl:
        out["aws_allow_http"] = "true"
    if region:
        out["aws_region"] = str(region)
    style = (config_kwargs.pop("s3", None) or {}).get("addressing_style")
    if style in ("virtual", "path"):
        out["aws_virtual_hosted_style_request"] = "true" if style == "virtual" else "false"
    if client_kwargs:
        return f"s3fs client_kwargs {sorted(client_kwargs)} cannot be mapped to the Rust S3 client"
    if config_kwargs:
        return f"s3fs config_kwargs {sorted(config_kwargs)} cannot be mapped to the Rust S3 client"
    return _unmapped(so, "s3fs", "S3") or out


def _gcs_options(so: dict[str, Any]) -> dict[str, str] | str:
    out: dict[str, str] = {}
    so = dict(so)
    token = so.pop("token", None)
    so.pop("project", None)
    if token == "anon":
        out["google_skip_signature"] = "true"
    elif isinstance(token, str) and token not in ("google_default", "cloud", "cache", "browser"):
        out["google_service_account"] = token
    elif token not in (None, "google_default", "cloud"):
        return f"gcsfs token {token!r} cannot be mapped to the Rust GCS client"
    return _unmapped(so, "gcsfs", "GCS") or out


def _azure_options(so: dict[str, Any]) -> dict[str, str] | str:
    out: dict[str, str] = {}
    so = dict(so)
    for name, key in (
        ("account_name", "azure_storage_account_name"),
        ("account_key", "azure_storage_account_key"),
        ("sas_token", "azure_storage_sas_key"),
        ("tenant_id", "azure_storage_tenant_id"),
        ("client_id", "azure_storage_client_id"),
        ("client_secret", "azure_storage_client_secret"),
    ):
        value = so.pop(name, None)
        if value is not None:
            out[key] = str(value)
    if so.pop("anon", False):
        out["azure_skip_signature"] = "true"
    return _unmapped(so, "adlfs", "Azure") or out


def _fsspec_target(store: Any) -> tuple[str, dict[str, str]] | str:
    """The URL and builder options of an ``FsspecStore``, or why it cannot be mapped."""
    fs = store.fs
    inner = getattr(fs, "sync_fs", None) or fs  # zarr wraps synchronous file systems
    protocol = inner.protocol if isinstance(inner.protocol, str) else inner.protocol[0]
    so = dict(getattr(inner, "storage_options", {}) or {})
    path = str(store.path).strip("/")
    options: dict[str, str] | str
    if protocol in ("s3", "s3a"):
        options, url = _s3_options(so), f"s3://{path}"
    elif protocol in ("gs", "gcs"):
        options, url = _gcs_options(so), f"gs://{path}"
    elif protocol in ("abfs", "az", "abfss"):
        options, url = _azure_options(so), f"az://{path}"
    elif protocol in ("http", "https"):
        left = sorted(k for k, v in so.items() if k not in _IGNORED and not (k == "client_kwargs" and not v))
        if left:
            return f"HTTP file system options {left} cannot be mapped to the Rust HTTP client"
        url = str(store.path)
        options = {"allow_http": "true"} if url.startswith("http://") else {}
    else:
        return f"fsspec protocol {protocol!r} has no Rust backend"
    if isinstance(options, str):
        return options
    return url, options


def store_url(store: Any) -> str:
    """A URL naming a zarr-python store: its real location for local, obstore and fsspec stores
    (``file:///...``, ``s3://bucket/prefix``, ...), a unique name for anything else."""
    from zarr.storage import LocalStore

    if type(store) is LocalStore:
        return Path(store.root).resolve().as_uri()
    cls = type(store).__name__
    if cls == "FsspecStore":
        protocol = store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]
        path = str(store.path).strip("/")
        return path if protocol in ("http", "https") else f"{protocol}://{path}"
    if cls == "ObjectStore":
        inner = store.store
        config = dict(getattr(inner, "config", {}) or {})
        prefix = str(getattr(inner, "prefix", "") or "").strip("/")
        kind = type(inner).__name__
        if kind == "HTTPStore":
            return str(getattr(inner, "url", "") or f"http://{id(inner):x}")
        scheme, bucket = {"S3Store": ("s3", "bucket"), "GCSStore": ("gs", "bucket"), "AzureStore": ("az", "container_name")}.get(kind, ("object", ""))
        base = f"{scheme}://{config.get(bucket, '')}"
        return f"{base}/{prefix}" if prefix else base
    return f"memory://{id(store):x}"


def object_handle(store: Any) -> _lib.Store | str | None:
    """The Rust object-store handle for a zarr-python ``ObjectStore`` or ``FsspecStore``; a
    string saying why not if it is one but cannot be mapped; ``None`` for other stores."""
    from sparsezarr.store import RustStore

    if type(store) is RustStore:
        return store.handle
    cls = type(store).__name__
    module = type(store).__module__
    if not module.startswith("zarr.storage"):
        return None
    settings = Settings.from_config()
    tuning = (settings.remote_max_in_flight, settings.multipart_threshold_bytes)
    if cls == "ObjectStore":
        inner = store.store
        kind = type(inner).__name__
        if kind not in ("S3Store", "GCSStore", "AzureStore", "HTTPStore"):
            return f"obstore {kind} has no Rust backend here (only S3Store, GCSStore, AzureStore and HTTPStore)"
        try:
            args = inner.__getnewargs_ex__()
        except BaseException as e:  # noqa: BLE001 - obstore can panic (PanicException) on some configurations
            return f"cannot read the configuration of {kind}: {e}"
        if args[1].get("credential_provider") is not None:
            return f"{kind} has a credential_provider callback; it runs in Python, so this store is used through zarr-python"
        key: tuple[Any, ...] = ("obstore", kind, repr(args), store.read_only, tuning)
        endpoint = dict(getattr(inner, "config", {}) or {}).get("endpoint")
        label = f"{store_url(store)} ({endpoint})" if endpoint else store_url(store)
        return _cached(
            key,
            lambda: _lib.Store.obstore(inner, label, read_only=store.read_only, max_in_flight=tuning[0], multipart_threshold=tuning[1]),
        )
    if cls == "FsspecStore":
        target = _fsspec_target(store)
        if isinstance(target, str):
            return target
        url, options = target
        key = ("url", url, tuple(sorted(options.items())), store.read_only, tuning)
        return _cached(
            key, lambda: _lib.Store.object_url(url, options, read_only=store.read_only, max_in_flight=tuning[0], multipart_threshold=tuning[1])
        )
    return None


def _cached(key: tuple[Any, ...], make: Callable[[], _lib.Store]) -> _lib.Store | str:
    with _LOCK:
        handle = _CACHE.get(key)
        if handle is not None:
            _CACHE.move_to_end(key)
            return handle
    try:
        handle = make()
    except ValueError as e:
        logger.info("remote store not handled in Rust: %s", e)
        return str(e)
    with _LOCK:
        _CACHE[key] = handle
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return handle
