"""A Ferry download transport written in Python: pymirror://HOST:PORT/PATH
downloads http://HOST:PORT/PATH.

It targets the `downloader` world of `ferry:transfer@0.2.0` and speaks
`wasi:http/outgoing-handler` itself, blocking on its pollables: the same
rules as Ferry's built-in `http` plugin (resume guarded by If-Range, byte
ranges, exact body lengths, the SPEC's status classes, redirects that drop
the owner's headers and credentials off the origin). Bodies are spliced from
the response into the host's destination, never read into Python.
"""

from urllib.parse import urljoin, urlsplit
import base64
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import ferry_transfer_types as t
from wit_world.imports import host, monotonic_clock, outgoing_handler, poll, streams
from wit_world.imports import wasi_http_types as http

SCHEME = "pymirror://"
REDIRECTS = (301, 302, 303, 307, 308)
ORIGIN_BOUND = ("authorization", "cookie", "proxy-authorization")
DEFAULT_PORTS = {"http": 80, "https": 443}
# How often a call waiting for a response head checks for cancellation.
CANCEL_CHECK_NS = 200_000_000


class Download(exports.Download):
    def download(
        self, job: t.JobContext, request: t.DownloadRequest, destination: host.Destination
    ) -> None:
        try:
            download(job, request, destination)
        except Err:
            raise
        except Exception as e:
            # A bug of this plugin: say where, rather than trap without a word.
            where = "; ".join(
                f"{f.name} line {f.lineno}" for f in traceback.extract_tb(e.__traceback__)[-3:]
            )
            raise transient(
                t.ErrorContext.PLUGIN,
                t.ErrorCode_Other("plugin-bug"),
                f"{type(e).__name__}: {e} (at {where})",
            )


def download(job, request, destination):
    url = request.url
    if url.startswith(SCHEME):
        url = "http://" + url[len(SCHEME) :]
    ranged = request.end is not None or (request.offset > 0 and request.validator is not None)
    own = [("accept-encoding", "identity")]
    if ranged:
        if request.end is not None and request.end <= request.offset:
            return  # A range of no bytes: nothing to fetch.
        last = "" if request.end is None else str(request.end - 1)
        own.append(("range", f"bytes={request.offset}-{last}"))
        if request.validator is not None:
            own.append(("if-range", request.validator.value))
    with fetch(job, url, own) as response:
        status = response.status
        if status == 206 and ranged:
            continue_range(request, response, destination)
        elif status == 206:
            raise range_mismatch(
                f"{url} answered 206 Partial Content to a request for the whole resource"
            )
        elif status == 200:
            whole_body(request, response, destination)
        elif status == 416 and ranged and request.end is None:
            already_complete(request, response, destination)
        else:
            raise from_status(status, url)


# --- typed errors -----------------------------------------------------------


def error(cls, context, code, message, status=None) -> Err:
    return Err(t.TransferError(cls, context, code, status, message[:1024]))


def transient(context, code, message) -> Err:
    return error(t.ErrorClass.TRANSIENT, context, code, message)


def fatal(context, code, message) -> Err:
    return error(t.ErrorClass.FATAL, context, code, message)


def range_mismatch(message) -> Err:
    return fatal(t.ErrorContext.REMOTE_FILE, t.ErrorCode_RangeMismatch(), message)


def length_mismatch(message) -> Err:
    return transient(t.ErrorContext.TRANSPORT, t.ErrorCode_LengthMismatch(), message)


def connection_dropped(message) -> Err:
    return transient(t.ErrorContext.TRANSPORT, t.ErrorCode_ConnectionDropped(), message)


def invalid_url(url, why) -> Err:
    return fatal(
        t.ErrorContext.REMOTE_FILE,
        t.ErrorCode_Other("invalid-url"),
        f"{url} is not a usable URL: {why}",
    )


def from_status(status, url) -> Err:
    """The SPEC's classes: 4xx fatal but 408, 409, 425, 429; 5xx transient
    but 501, 505; anything else unexpected is fatal."""
    retry = status in (408, 409, 425, 429) or (500 <= status <= 599 and status not in (501, 505))
    context = (
        t.ErrorContext.REMOTE_FILE
        if status in (404, 410, 416)
        else t.ErrorContext.REMOTE_APPLICATION
    )
    cls = t.ErrorClass.TRANSIENT if retry else t.ErrorClass.FATAL
    return error(
        cls, context, t.ErrorCode_HttpStatus(), f"the server answered {status} for {url}", status
    )


def from_http_error(code, url) -> Err:
    """A `wasi:http` error code as a typed error."""
    transport = t.ErrorContext.TRANSPORT
    if isinstance(code, (http.ErrorCode_HttpRequestDenied, http.ErrorCode_DestinationIpProhibited)):
        return fatal(
            t.ErrorContext.POLICY,
            t.ErrorCode_HostNotGranted(),
            f"the host refused the request to {url}",
        )
    if isinstance(
        code, (http.ErrorCode_HttpRequestUriInvalid, http.ErrorCode_HttpRequestUriTooLong)
    ):
        return invalid_url(url, type(code).__name__)
    if isinstance(
        code, (http.ErrorCode_ConnectionTerminated, http.ErrorCode_HttpResponseIncomplete)
    ):
        return connection_dropped(f"the connection broke off before the response was whole ({url})")
    if isinstance(code, http.ErrorCode_TlsCertificateError):
        return fatal(
            transport,
            t.ErrorCode_Other("tls-certificate"),
            f"the server's certificate was refused ({url})",
        )
    kinds = {
        http.ErrorCode_DnsTimeout: "dns-failed",
        http.ErrorCode_DnsError: "dns-failed",
        http.ErrorCode_ConnectionRefused: "connection-refused",
        http.ErrorCode_ConnectionTimeout: "timeout",
        http.ErrorCode_ConnectionReadTimeout: "timeout",
        http.ErrorCode_ConnectionWriteTimeout: "timeout",
        http.ErrorCode_TlsProtocolError: "tls-failed",
        http.ErrorCode_TlsAlertReceived: "tls-failed",
    }
    kind = kinds.get(type(code), "connection-failed")
    return transient(transport, t.ErrorCode_Other(kind), f"{kind} ({url}): {type(code).__name__}")


def check_cancelled() -> None:
    if host.is_cancelled():
        raise transient(
            t.ErrorContext.PLUGIN, t.ErrorCode_Cancelled(), "the host cancelled the call"
        )


# --- requests and redirects --------------------------------------------------


def parse(url):
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise invalid_url(url, "only http and https are spoken")
    if not parts.hostname:
        raise invalid_url(url, "the URL has no host")
    try:
        parts.port
    except ValueError as e:
        raise invalid_url(url, str(e))
    return parts


def origin(parts):
    return (parts.scheme, parts.hostname.lower(), parts.port or DEFAULT_PORTS[parts.scheme])


def owner_headers(job, own):
    """The owner's headers but those the plugin sets itself (`own`), and the
    credentials' Authorization, which replaces any other."""
    replaced = {name.lower() for name, _ in own}
    credentials = job.credentials
    if credentials is not None:
        replaced.add("authorization")
    headers = [(h.name, h.value) for h in job.headers if h.name.lower() not in replaced]
    if isinstance(credentials, t.Credentials_Basic):
        pair = f"{credentials.value.user}:{credentials.value.password}".encode()
        headers.append(("authorization", "Basic " + base64.b64encode(pair).decode()))
    elif isinstance(credentials, t.Credentials_Bearer):
        headers.append(("authorization", "Bearer " + credentials.value))
    return headers


def fetch(job, url, own):
    """GETs `url` with the plugin's headers `own`, following redirects up to
    the job's limit. The owner's headers and credentials go to the origin the
    job named only: once a hop leaves it they are dropped for good, with any
    Authorization, Cookie and Proxy-Authorization."""
    first = origin(parse(url))
    left = False
    for _ in range(job.network.max_redirects + 1):
        parts = parse(url)
        left = left or origin(parts) != first
        headers = [] if left else owner_headers(job, own)
        headers += [(n, v) for n, v in own if not (left and n.lower() in ORIGIN_BOUND)]
        response = send(job, parts, headers, url)
        location = response.header("location")
        if response.status not in REDIRECTS or location is None:
            return response
        response.close()
        url = urljoin(url, location)
    raise fatal(
        t.ErrorContext.REMOTE_APPLICATION,
        t.ErrorCode_Other("too-many-redirects"),
        f"more than {job.network.max_redirects} redirects",
    )


def send(job, parts, headers, url):
    fields = http.Fields()
    for name, value in headers:
        try:
            fields.append(name, value.encode())
        except Err as e:
            raise fatal(
                t.ErrorContext.PLUGIN,
                t.ErrorCode_Other("invalid-header"),
                f"header {name}: {e.value}",
            )
    request = http.OutgoingRequest(fields)
    request.set_method(http.Method_Get())
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc.rpartition("@")[2])
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    options = http.RequestOptions()
    network = job.network
    for set_timeout, ms in (
        (options.set_connect_timeout, network.connect_timeout_ms),
        (options.set_first_byte_timeout, network.first_byte_timeout_ms),
        (options.set_between_bytes_timeout, network.between_bytes_timeout_ms),
    ):
        if ms > 0:
            try:
                set_timeout(ms * 1_000_000)
            except Err:
                pass  # The host enforces its settings anyway.
    try:
        future = outgoing_handler.handle(request, options)
    except Err as e:
        raise from_http_error(e.value, url)
    with future:
        with future.subscribe() as ready:
            while (result := future.get()) is None:
                check_cancelled()
                with monotonic_clock.subscribe_duration(CANCEL_CHECK_NS) as tick:
                    poll.poll([ready, tick])
    incoming = result.value
    if isinstance(incoming, Err):
        raise from_http_error(incoming.value, url)
    return Response(incoming.value, url)


class Response:
    """The status, the headers (lower-case names) and the body of an answer."""

    def __init__(self, incoming, url):
        self.incoming = incoming
        self.url = url
        self.status = incoming.status()
        with incoming.headers() as fields:
            self.headers = {}
            for name, value in fields.entries():
                self.headers.setdefault(name.lower(), value.decode("latin-1"))

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def close(self):
        self.incoming.__exit__(None, None, None)

    def header(self, name):
        return self.headers.get(name)

    def content_length(self):
        value = (self.header("content-length") or "").strip()
        return int(value) if value.isdigit() else None

    def remote_info(self, size):
        etag = (self.header("etag") or "").strip()
        date = (self.header("last-modified") or "").strip()
        if etag and not etag.startswith("W/"):
            validator = t.Validator_Etag(etag)
        elif date:
            validator = t.Validator_LastModified(date)
        else:
            validator = None
        ranges = any(
            u.strip().lower() == "bytes" for u in (self.header("accept-ranges") or "").split(",")
        )
        return t.RemoteInfo(size, validator, ranges, self.url)

    def splice_into(self, sink, skip=0, length=None, exact=True):
        """Moves the body into `sink`: `skip` bytes dropped, then `length`
        bytes (all, when None). With `exact`, a body longer than `skip +
        length` is a length-mismatch too."""
        body = self.incoming.consume()
        try:
            with body.stream() as stream:
                skipped = pump(stream, None, skip)
                moved = pump(stream, sink, length) if skipped == skip else 0
                if skipped < skip or (length is not None and moved < length):
                    raise length_mismatch(
                        f"the body of {self.url} ended after {skipped + moved} bytes"
                    )
                if exact and length is not None and not at_end(stream):
                    raise length_mismatch(
                        f"the body of {self.url} is longer than the {length} bytes declared"
                    )
        except BaseException:
            body.__exit__(None, None, None)
            raise
        # `finish` takes the body; its trailers are not wanted.
        http.IncomingBody.finish(body).__exit__(None, None, None)


def pump(stream, sink, limit):
    """Splices (or, without a sink, skips) up to `limit` bytes (all, when
    None) of `stream`; returns how many moved. Checks for cancellation
    between chunks."""
    moved = 0
    while limit is None or moved < limit:
        check_cancelled()
        want = (1 << 62) if limit is None else limit - moved
        try:
            moved += sink.blocking_splice(stream, want) if sink else stream.blocking_skip(want)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise connection_dropped(
                f"the body broke off after {moved} bytes: {e.value.value.to_debug_string()}"
            )
    if sink is not None:
        try:
            sink.blocking_flush()
        except Err as e:
            raise transient(
                t.ErrorContext.LOCAL_FILE,
                t.ErrorCode_Other("write-failed"),
                f"writing failed: {e.value}",
            )
    return moved


def at_end(stream):
    try:
        return len(stream.blocking_read(1)) == 0
    except Err as e:
        if isinstance(e.value, streams.StreamError_Closed):
            return True
        raise connection_dropped(
            f"the body broke off at its end: {e.value.value.to_debug_string()}"
        )


# --- what each answer means ----------------------------------------------------


def content_range(value):
    """`bytes FIRST-LAST/TOTAL` as (first, last, total or None), else None."""
    unit, _, rest = (value or "").strip().partition(" ")
    span, _, total = rest.strip().partition("/")
    first, _, last = span.partition("-")
    if unit.lower() != "bytes" or not (first.isdigit() and last.isdigit()):
        return None
    first, last = int(first), int(last)
    total = None if total.strip() == "*" else (int(total) if total.strip().isdigit() else -1)
    if total == -1 or last < first or (total is not None and last >= total):
        return None
    return first, last, total


def continue_range(request, response, destination):
    """A 206 for the range asked: its Content-Range must answer it."""
    parsed = content_range(response.header("content-range"))
    if parsed is not None:
        first, last, total = parsed
        want_end = (
            request.end
            if total is None
            else (total if request.end is None else min(request.end, total))
        )
        fits = first == request.offset and (want_end is None or last + 1 == want_end)
    if parsed is None or not fits:
        raise range_mismatch(
            f"asked {request.url} for bytes from {request.offset} "
            f"but it answered Content-Range {response.header('content-range')!r}"
        )
    info = response.remote_info(total)
    info.accepts_ranges = True
    with destination.begin(info, request.offset) as sink:
        response.splice_into(sink, length=last - first + 1)


def whole_body(request, response, destination):
    """A 200: the whole resource, because it was asked for, because it
    changed, or because the server ignores ranges."""
    size = response.content_length()
    info = response.remote_info(size)
    if request.end is None:
        with destination.begin(info, 0) as sink:
            response.splice_into(sink, length=size)
        return
    recorded, now = request.validator, info.validator
    if (
        recorded is not None
        and now is not None
        and (type(recorded), recorded.value) != (type(now), now.value)
    ):
        raise transient(
            t.ErrorContext.REMOTE_FILE,
            t.ErrorCode_ResourceChanged(),
            f"{request.url} changed since its ranges began",
        )
    if size is not None and size < request.end:
        raise range_mismatch(
            f"asked {request.url} for bytes up to {request.end} of a resource of {size} bytes"
        )
    with destination.begin(info, request.offset) as sink:
        response.splice_into(
            sink, skip=request.offset, length=request.end - request.offset, exact=False
        )


def already_complete(request, response, destination):
    """A 416 to a resume: complete when the resource ends at the offset."""
    value = (response.header("content-range") or "").strip()
    unit, _, rest = value.partition(" ")
    total = rest.strip()[2:] if rest.strip().startswith("*/") else ""
    if unit.lower() != "bytes" or not total.isdigit() or int(total) != request.offset:
        raise from_status(416, request.url)
    info = response.remote_info(request.offset)
    if info.validator is None:
        info.validator = request.validator  # If-Range held: the range was applied.
    info.accepts_ranges = True
    destination.begin(info, request.offset).__exit__(None, None, None)
