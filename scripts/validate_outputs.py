"""Checks a Groundwork server's published outputs with third-party tools (run by
scripts/validate-outputs.sh inside its throwaway virtualenv; not part of the test suite).

- STAC: the project's Collection, its Items (one by one and as the /items FeatureCollection) with
  stac-validator (core + every declared extension), pystac (JSON-schema validation, the object model
  round trip, the extension accessors) and stac-pydantic's models; every link and asset href opened
  (the token goes to the server's own origin only, never to another host). Neither tool
  can fetch schemas here (no internet), so both are pointed at local copies: the STAC 1.1.0 core and
  GeoJSON schemas pystac ships in its wheel, and the published v1.0.0 projection / raster /
  classification extension schemas in the folder --schemas names (STAC_EXTENSION_SCHEMAS).
- STAC <-> COG: the Item's proj:/raster:/classification: fields against the COG and the legend.
- COGs: `rio cogeo validate` on every GeoTIFF asset href, read over HTTP by GDAL (/vsicurl/ with the
  token in GDAL_HTTP_HEADERS), after a check that the server answers range requests with 206; and on
  the web-mercator COG the tiles are drawn from, when the object store is a local folder.
- Tiles: our PNG tiles against TiTiler's (titiler.core TilerFactory in a FastAPI app, through
  starlette's TestClient) of the UTM COG asset href (same colours from the legend, nearest
  resampling), and of the web-mercator COG itself when it can be read; the fraction of matching pixels.

Prints a table (check, result, detail); exits 1 when a validator that could run found an error.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import requests

warnings.filterwarnings("ignore")

ROWS: list[tuple[str, str, str]] = []
NOTES: list[str] = []


def row(check: str, result: str, detail: str = "") -> None:
    ROWS.append((check, result, detail))
    print(f"[{result}] {check}: {detail}", flush=True)


def note(text: str) -> None:
    NOTES.append(text)
    print(f"  note: {text}", flush=True)


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}{path}"

    def get(self, path: str, **kw):
        r = self.s.get(self.url(path), timeout=120, **kw)
        return r

    def json(self, path: str):
        r = self.get(path)
        r.raise_for_status()
        return r.json()

    def pages(self, path: str):
        out, cursor = [], None
        while True:
            q = {"limit": 200}
            if cursor:
                q["cursor"] = cursor
            page = self.get(path, params=q)
            page.raise_for_status()
            body = page.json()
            out.extend(body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return out


# ---------------------------------------------------------------------------------------------
# Schemas


EXT_ROOT = "https://stac-extensions.github.io"


def extensions(ext_dir: Path) -> dict[str, str]:
    """Published extension schema URL -> path under --schemas (<name>/<version>/schema.json)."""
    return {f"{EXT_ROOT}/{p.parent.parent.name}/{p.parent.name}/schema.json": str(p.relative_to(ext_dir))
            for p in sorted(ext_dir.glob("*/v*/schema.json"))}


EXTENSIONS: dict[str, str] = {}


def schema_map(ext_dir: Path) -> dict[str, str]:
    """Schema URL -> local file: pystac's bundled core + GeoJSON schemas, our copies of the extensions."""
    import pystac.validation

    core = Path(pystac.validation.__file__).resolve().parent / "jsonschemas"
    ext_dir = ext_dir.resolve()
    m: dict[str, str] = {}
    v = "https://schemas.stacspec.org/v1.1.0"
    for kind in ("item", "catalog", "collection"):
        m[f"{v}/{kind}-spec/json-schema/{kind}.json"] = str(core / "stac-spec/v1.1.0" / f"{kind}.json")
    for name in ("bands", "basics", "common", "data-values", "datetime", "instrument", "licensing", "provider"):
        m[f"{v}/item-spec/json-schema/{name}.json"] = str(core / "stac-spec/v1.1.0" / f"{name}.json")
    for name in ("Feature", "Geometry"):
        m[f"https://geojson.org/schema/{name}.json"] = str(core / "geojson" / f"{name}.json")
    for url, rel in EXTENSIONS.items():
        m[url] = str(ext_dir / rel)
    # PROJJSON (only for proj:projjson), as PROJ's data in the rasterio wheel has it.
    try:
        import rasterio

        pj = Path(rasterio.__file__).resolve().parent / "proj_data" / "projjson.schema.json"
        m[json.loads(pj.read_text())["$id"]] = str(pj)
    except (OSError, ValueError, KeyError, ImportError):
        pass
    return {k: p for k, p in m.items() if Path(p).exists()}


def compare_test_schemas(ext_dir: Path, test_dir: Path) -> None:
    """The server's tests validate against extension schemas under server/tests/fixtures/stac-schemas:
    say where each differs from the published schema of the URL its $id claims."""
    files = sorted((test_dir / "extensions").glob("*.json")) if test_dir.is_dir() else []
    if not files:
        row("test schemas = published", "SKIP", f"no extension schemas under {test_dir}")
        return
    diffs, same, matters = [], [], False
    for f in files:
        test = json.loads(f.read_text())
        url = str(test.get("$id", "")).rstrip("#")
        if url not in EXTENSIONS:
            diffs.append(f"{f.name}: $id {url} has no published copy here to compare with")
            matters = True
            continue
        pub = json.loads((ext_dir / EXTENSIONS[url]).read_text())
        name = EXTENSIONS[url].split("/")[0]
        if strip_comments(pub) == strip_comments(test):
            same.append(short_schema(url))
        else:
            what, m = describe_schema_diff(name, pub, test)
            matters = matters or m
            diffs.append(f"{f.name} ({short_schema(url)}): {what}")
    if diffs:
        row("test schemas = published", "WARN" if matters else "PASS",
            "server/tests/fixtures/stac-schemas/extensions differ from the published schemas of their $id: "
            + "; ".join(diffs) + (f" (the same: {', '.join(same)})" if same else ""))
    else:
        row("test schemas = published", "PASS", "the server tests' extension schemas are the published ones: "
            + ", ".join(same))


def strip_comments(v):
    if isinstance(v, dict):
        return {k: strip_comments(x) for k, x in v.items() if k not in ("$comment", "title", "description")}
    if isinstance(v, list):
        return [strip_comments(x) for x in v]
    return v


def describe_schema_diff(name: str, pub: dict, test: dict) -> tuple[str, bool]:
    """What differs, and whether it can change a verdict on Groundwork's documents."""
    s_pub, s_test = json.dumps(pub), json.dumps(test)
    facts, matters = [], False
    if name == "projection":
        if '"required": ["proj:epsg"]' in s_pub and '"required": ["proj:epsg"]' not in s_test:
            facts.append("the published schema requires proj:epsg in Item properties, the test copy does not")
            matters = True
        if "v0.2/projjson" in s_pub and "v0.5/projjson" in s_test:
            facts.append("PROJJSON ref v0.2 (published) vs v0.5 (test copy; only for proj:projjson)")
    if name == "raster":
        if '"nan"' in s_test and '"nan"' not in s_pub:
            facts.append('the test copy accepts nodata "nan"/"inf"/"-inf" strings, the published one only numbers')
            matters = True
        if '"item_assets"' in s_pub and '"item_assets"' not in s_test:
            facts.append("the test copy drops the Collection item_assets rule (no effect on Items)")
    if name == "classification":
        if '"color-hint"' in s_pub and '"color_hint"' in s_test:
            facts.append("the published class colour field is color-hint (^[0-9A-F]{6}$), the test copy's color_hint")
            matters = True
        if "require_any_field" in s_pub and "require_any_field" not in s_test:
            facts.append("the test copy drops the require_any_field definition (referenced nowhere: no effect)")
    if not facts:
        facts, matters = ["other differences"], True
    return ", ".join(facts), matters


# ---------------------------------------------------------------------------------------------
# STAC


def run_stac_validator(venv_bin: Path, target: str, token: str, config: Path, extra: list[str], label: str,
                       work: Path) -> bool | None:
    cmd = [str(venv_bin / "stac-validator"), "validate", target, "--schema-config", str(config),
           "--header", "Authorization", f"Bearer {token}", "--verbose", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    (work / f"stac-validator-{safe(label)}.out").write_text(p.stdout + "\n--- stderr\n" + p.stderr)
    start = p.stdout.find("[")
    try:
        res = json.JSONDecoder().raw_decode(p.stdout[start:])[0] if start >= 0 else None
    except json.JSONDecodeError:
        res = None
    if not res:
        row(f"stac-validator {label}", "ERROR", f"no result (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
        return None
    ok = True
    for n, r in enumerate(res):
        name = f"stac-validator {label}" + (f" [{n + 1}/{len(res)}]" if len(res) > 1 else "")
        valid = bool(r.get("valid_stac"))
        bits = []
        if r.get("schema"):
            bits.append("schemas " + ", ".join(short_schema(s) for s in r["schema"]))
        msg = str(r.get("error_message") or r.get("error_type") or "")
        if not valid and any(t in msg for t in ("NameResolution", "Max retries", "urlopen error",
                                                 "Failed to resolve", "ConnectionError")):
            where = re.search(r"host='([^']+)'.*?url: (\S+)", msg)
            what = f"https://{where.group(1)}{where.group(2)}" if where else msg[:300]
            row(name, "ERROR", f"a schema could not be read offline (add it under STAC_EXTENSION_SCHEMAS): {what}")
            ok = None
            continue
        if not valid:
            ok = False
            if r.get("failed_schema"):
                msg += f" [schema {short_schema(r['failed_schema'])}]"
            bits.append(f"{r.get('error_type')}: {msg}")
        row(name, "PASS" if valid else "FAIL", "; ".join(bits))
    return ok


def link_checks(api: Api, label: str, d: dict) -> None:
    """Opens every link and asset href. stac-validator's --links/--assets would send the token to every
    host a link names, so this is done here: the token goes to the server's own origin only, other
    hosts are opened (without it) only with VALIDATE_EXTERNAL_LINKS=1 (there is no internet here)."""
    from urllib.parse import urlsplit

    own = urlsplit(api.base)[:2]
    opened, failed, templated, external = [], [], [], []
    targets = [(f"link rel={l.get('rel')}", l.get("href", "")) for l in d.get("links", [])]
    targets += [(f"asset {k}", v.get("href", "")) for k, v in (d.get("assets") or {}).items()]
    for what, href in targets:
        parts = urlsplit(href)
        if parts.scheme not in ("http", "https"):
            failed.append(f"{what} {href!r}: not an absolute http(s) URL")
        elif "{" in href or "}" in href:
            templated.append(f"{what} {href}")
        elif parts[:2] == own:
            r = api.s.get(href, stream=True, timeout=120)
            r.close()
            (opened if r.status_code == 200 else failed).append(f"{what} {href} -> {r.status_code}")
        elif os.environ.get("VALIDATE_EXTERNAL_LINKS") == "1":
            try:
                r = requests.head(href, allow_redirects=True, timeout=10)
                (opened if r.status_code < 400 else failed).append(f"{what} {href} -> {r.status_code}")
            except requests.RequestException as e:
                failed.append(f"{what} {href}: {type(e).__name__}")
        else:
            external.append(f"{what} {href}")
    declared = " ".join(d.get("stac_extensions") or [])
    detail = [f"{len(opened)} links/assets on the server answered 200"]
    result = "PASS"
    if failed:
        result = "FAIL"
        detail.append("failed: " + "; ".join(failed))
    if templated:
        if "web-map-links" not in declared:
            result = "WARN" if result == "PASS" else result
            detail.append("hrefs that are URI templates (not URLs: only a client that knows the "
                          "web-map-links extension expands rel=xyz templates, and stac_extensions does not "
                          "declare it): " + "; ".join(templated))
        else:
            detail.append("web-map-links templates not opened: " + "; ".join(templated))
    if external:
        detail.append("other hosts not opened (no internet; VALIDATE_EXTERNAL_LINKS=1 opens them): " + "; ".join(external))
    row(f"links and assets {label}", result, "; ".join(detail))


def short(uuid: str) -> str:
    """The random tail of an id (UUIDv7s made together share their leading, time-based digits)."""
    return uuid[-8:]


def safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def short_schema(s: str) -> str:
    s = str(s)
    for marker in ("/stac-schemas/", "/jsonschemas/stac-spec/", "/jsonschemas/"):
        if marker in s:
            return "local:" + s.split(marker, 1)[1].replace("/schema.json", "")
    for pre in ("https://schemas.stacspec.org/", "https://stac-extensions.github.io/"):
        if s.startswith(pre):
            return s[len(pre):].replace("/schema.json", "")
    return s


def pystac_checks(objs: list[tuple[str, dict]], ext_dir: Path) -> None:
    import pystac
    from pystac.validation import JsonSchemaSTACValidator, set_validator, validate_dict

    v = JsonSchemaSTACValidator()
    for url, rel in EXTENSIONS.items():
        v.schema_cache[url] = json.loads((ext_dir / rel).read_text())
    set_validator(v)
    for label, d in objs:
        try:
            uris = validate_dict(d)
            row(f"pystac validate {label}", "PASS", f"{len(uris)} schemas: " + ", ".join(short_schema(u) for u in uris))
        except pystac.STACValidationError as e:
            msgs = sorted({f"{'/'.join(map(str, err.absolute_path)) or '(root)'}: {err.message[:200]}"
                           for err in leaves(e.source or [])
                           # the other branch of an Item-or-Collection oneOf
                           if not (err.validator == "const" and list(err.absolute_path) == ["type"])})
            head = str(e).splitlines()[0]
            row(f"pystac validate {label}", "FAIL", head + (" | " + " | ".join(msgs[:6]) if msgs else ""))
        except Exception as e:  # a schema that could not be read, etc.
            row(f"pystac validate {label}", "ERROR", f"{type(e).__name__}: {str(e).split(': HTTPS')[0][:300]}")
        # The object model: read, write back, compare.
        try:
            cls = pystac.Item if d.get("type") == "Feature" else pystac.Collection
            obj = cls.from_dict(json.loads(json.dumps(d)), migrate=False)
            back = obj.to_dict(include_self_link=True, transform_hrefs=False)
            diff = dict_diff(d, back)
            benign = [x for x in diff if x.endswith(" dropped") and empty_at(d, x[:-len(" dropped")])]
            diff = [x for x in diff if x not in benign]
            if benign and not diff:
                row(f"pystac round trip {label}", "PASS", f"{cls.__name__}.from_dict().to_dict() reproduces the document "
                    f"but for empty fields it leaves out ({', '.join(b[:-8] for b in benign)})")
            elif diff:
                row(f"pystac round trip {label}", "WARN", "to_dict() differs from the served JSON: " + "; ".join(diff[:6]))
            else:
                row(f"pystac round trip {label}", "PASS", f"{cls.__name__}.from_dict().to_dict() reproduces the document")
        except Exception as e:
            row(f"pystac round trip {label}", "FAIL", f"{type(e).__name__}: {e}")


def empty_at(d, path: str) -> bool:
    v = d
    for k in path.strip("/").split("/"):
        v = v[int(k)] if isinstance(v, list) else v.get(k)
    return v in ([], {}, None, "")


def leaves(errors):
    """The innermost errors of jsonschema errors (a oneOf's own message names no field)."""
    for err in errors:
        if err.context:
            yield from leaves(err.context)
        else:
            yield err


def extension_field_names(label: str, item: dict, ext_dir: Path) -> None:
    """Fields whose names the declared extension version does not define (the schemas allow extra
    fields, so validators pass them, but a reader of that version does not see them)."""
    found, checked = [], []
    for url in item.get("stac_extensions") or []:
        if url not in EXTENSIONS:
            continue
        schema = json.loads((ext_dir / EXTENSIONS[url]).read_text())
        defs = schema.get("definitions", {})
        if "/classification/" in url:
            field, keys = "classification:classes", set(defs["class_object"]["properties"])
        elif "/raster/" in url:
            field, keys = "raster:bands", set(defs["bands"]["items"]["properties"])
        else:
            continue
        version = short_schema(url)
        checked.append(version)
        for key, asset in (item.get("assets") or {}).items():
            extra = sorted({k for o in asset.get(field) or [] for k in o} - keys)
            if extra:
                found.append(f"assets/{key}/{field} use {extra}, not fields of {version} (which has {sorted(keys)})")
    if found:
        row(f"extension field names {label}", "WARN", "; ".join(found))
    else:
        row(f"extension field names {label}", "PASS", f"every field is one {', '.join(checked) or 'the declared version'} defines")


def dict_diff(a, b, path="") -> list[str]:
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = f"{path}/{k}"
            if k not in b:
                out.append(f"{p} dropped")
            elif k not in a:
                out.append(f"{p} added ({json.dumps(b[k])[:60]})")
            else:
                out.extend(dict_diff(a[k], b[k], p))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(dict_diff(x, y, f"{path}/{i}"))
    elif a != b and not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) < 1e-9):
        out.append(f"{path}: {json.dumps(a)[:60]} -> {json.dumps(b)[:60]}")
    return out


def stac_pydantic_checks(objs: list[tuple[str, dict]], fc: tuple[str, dict] | None) -> None:
    """stac-pydantic's models (core fields only: its extension check fetches schemas from the web)."""
    from stac_pydantic import Collection, Item
    from stac_pydantic.api import ItemCollection

    for label, d in objs:
        model = Item if d.get("type") == "Feature" else Collection
        try:
            model.model_validate(d)
            row(f"stac-pydantic {label}", "PASS", f"{model.__name__} model")
        except Exception as e:
            row(f"stac-pydantic {label}", "FAIL", f"{model.__name__}: " + " | ".join(str(e).splitlines()[:4]))
    if fc is not None:
        label, d = fc
        try:
            ItemCollection.model_validate(d)
            row(f"stac-pydantic {label}", "PASS", "STAC API ItemCollection model")
        except Exception as e:
            # The rule is STAC API - Features' (the /items page is not part of a conformant STAC API:
            # there is no landing page or conformance), so it is reported, not counted as a failure.
            row(f"stac-pydantic {label}", "WARN",
                "STAC API ItemCollection model: "
                + re.sub(r"\s*\[type=.*", "", " ".join(str(e).splitlines()[1:2]).strip()))


def pystac_extension_checks(label: str, d: dict, legend: list[dict]) -> None:
    """What pystac's extension accessors read from the Item, against the output's legend."""
    import pystac
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    item = pystac.Item.from_dict(json.loads(json.dumps(d)), migrate=False)
    problems, facts = [], []
    for name, ext in (("projection", ProjectionExtension), ("raster", RasterExtension),
                      ("classification", ClassificationExtension)):
        if not ext.has_extension(item):
            problems.append(f"pystac does not recognise the declared {name} extension "
                            f"(it knows {sorted(ext.get_schema_uris()) if hasattr(ext, 'get_schema_uris') else ext.get_schema_uri()})")
    data = item.assets.get("data")
    try:
        facts.append(f"proj epsg {ProjectionExtension.ext(item).epsg}")
    except Exception as e:
        problems.append(f"ProjectionExtension.ext(item): {type(e).__name__}: {e}")
    if data is not None:
        try:
            bands = RasterExtension.ext(data).bands or []
            facts.append(f"{len(bands)} raster band(s), nodata {[b.nodata for b in bands]}")
        except Exception as e:
            problems.append(f"RasterExtension.ext(data): {type(e).__name__}: {e}")
        if d.get("properties", {}).get("groundwork:kind") == "class":
            try:
                classes = ClassificationExtension.ext(data).classes or []
                got = {(c.value, c.name, (c.color_hint or "").upper()) for c in classes}
                want = {(c["id"], c["name"], c["color"].lstrip("#").upper()) for c in legend}
                facts.append(f"{len(classes)} classes")
                if got != want:
                    problems.append(f"classes read by pystac {sorted(got)} != legend {sorted(want)}")
                missing_hint = [c.value for c in classes if not c.color_hint]
                if missing_hint:
                    problems.append(f"pystac reads no color hint for classes {missing_hint}")
            except Exception as e:
                problems.append(f"ClassificationExtension.ext(data).classes: {type(e).__name__}: {e}")
    row(f"pystac extensions {label}", "WARN" if problems else "PASS", "; ".join(problems + facts))


def flatten_coords(c):
    if c and isinstance(c[0], (int, float)):
        yield c
    else:
        for x in c:
            yield from flatten_coords(x)


def stac_vs_cog(label: str, item: dict, info: dict | None, legend: list[dict]) -> None:
    """Does the Item describe the COG the href serves?"""
    if info is None:
        row(f"STAC vs COG {label}", "SKIP", "the COG could not be read")
        return
    data = item["assets"]["data"]
    props = item["properties"]
    bad, bad_soft = [], []
    shape = [info["height"], info["width"]]
    for where, obj in (("properties", props), ("asset", data)):
        if obj.get("proj:shape") is not None and obj["proj:shape"] != shape:
            bad.append(f"{where} proj:shape {obj['proj:shape']} != COG {shape}")
        if obj.get("proj:epsg") is not None and obj["proj:epsg"] != info["epsg"]:
            bad.append(f"{where} proj:epsg {obj['proj:epsg']} != COG EPSG:{info['epsg']}")
    bands = data.get("raster:bands") or []
    if len(bands) != info["count"]:
        bad.append(f"raster:bands has {len(bands)} entries, COG {info['count']} bands")
    for i, b in enumerate(bands[: info["count"]]):
        if b.get("data_type") and b["data_type"] != info["dtypes"][i]:
            bad.append(f"band {i + 1} data_type {b['data_type']} != COG {info['dtypes'][i]}")
        if "nodata" in b and info["nodata"] is None:
            bad.append(f"band {i + 1} nodata {b['nodata']} but the COG has no nodata value")
        elif "nodata" in b and str(b["nodata"]) != str(info["nodata"]) and not (
                isinstance(b["nodata"], (int, float)) and float(b["nodata"]) == float(info["nodata"])):
            bad.append(f"band {i + 1} nodata {b['nodata']} != COG {info['nodata']}")
        if b.get("spatial_resolution") and abs(b["spatial_resolution"] - info["res"]) > 1e-6:
            bad.append(f"band {i + 1} spatial_resolution {b['spatial_resolution']} != COG {info['res']}")
    w, s, e, n = item["bbox"]
    cw, cs, ce, cn = info["bounds_4326"]
    tol = 1e-6
    if cw < w - tol or cs < s - tol or ce > e + tol or cn > n + tol:
        bad.append(f"Item bbox {item['bbox']} does not contain the COG's extent {[round(x, 7) for x in info['bounds_4326']]}")
    # How far the Item's bbox reaches beyond the data (a bbox is the footprint's bounding box).
    lat = (s + n) / 2
    m_per_deg = 111_320.0
    margins = {"west": (cw - w) * m_per_deg * math.cos(math.radians(lat)), "south": (cs - s) * m_per_deg,
               "east": (e - ce) * m_per_deg * math.cos(math.radians(lat)), "north": (n - cn) * m_per_deg}
    area_ratio = ((e - w) * (n - s)) / max((ce - cw) * (cn - cs), 1e-12)
    if max(margins.values()) > 2 * info["res"]:
        bad_soft.append(f"Item bbox/geometry {[round(x, 5) for x in item['bbox']]} is {area_ratio:.1f}x the COG's extent "
                        f"{[round(x, 5) for x in info['bounds_4326']]}: it reaches "
                        + ", ".join(f"{v:.0f} m {k}" for k, v in margins.items())
                        + " beyond the data")
    coords = list(flatten_coords((item.get("geometry") or {}).get("coordinates", [])))
    if coords:
        gb = [min(c[0] for c in coords), min(c[1] for c in coords), max(c[0] for c in coords), max(c[1] for c in coords)]
        if any(abs(x - y) > 1e-9 for x, y in zip(gb, item["bbox"])):
            bad_soft.append(f"bbox {[round(x, 7) for x in item['bbox']]} is not the geometry's bounds "
                            f"{[round(x, 7) for x in gb]}")
    if info.get("colormap") and legend:
        wrong = []
        for c in legend:
            rgb = tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5))
            got = tuple(info["colormap"].get(c["id"], (None,) * 4)[:3])
            if got != rgb:
                wrong.append(f"class {c['id']} palette {got} != legend {rgb}")
        if wrong:
            bad.append("COG palette differs from the legend: " + "; ".join(wrong))
    if props.get("groundwork:kind") == "class" and info.get("values") is not None:
        known = {c["value"] for c in data.get("classification:classes") or []}
        nodata = info["nodata"]
        stray = sorted(v for v in info["values"] if v not in known and v != nodata)
        if stray:
            bad.append(f"COG holds values {stray} that are neither a class nor nodata")
    ok = (f"shape {shape}, EPSG:{info['epsg']}, {info['count']} band(s) {info['dtypes'][0]}, nodata {info['nodata']}, "
          "bbox contains the COG and bounds the geometry" + (", palette = legend" if info.get("colormap") and legend else ""))
    row(f"STAC vs COG {label}", "FAIL" if bad else ("WARN" if bad_soft else "PASS"),
        "; ".join(bad + bad_soft) if bad or bad_soft else ok)


# ---------------------------------------------------------------------------------------------
# COGs


def gdal_env(token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MAX_RETRY": "0",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    })
    return env


def range_check(api: Api, href: str, label: str) -> None:
    r = api.get(href, headers={"Range": "bytes=0-1023"}, stream=True)
    body = r.raw.read(4096, decode_content=False)
    r.close()
    if r.status_code == 206 and len(body) == 1024 and r.headers.get("Content-Range", "").startswith("bytes 0-1023/"):
        row(f"range request {label}", "PASS", f"206, Content-Range {r.headers['Content-Range']}, Accept-Ranges {r.headers.get('Accept-Ranges')}")
    else:
        row(f"range request {label}", "FAIL", f"GET Range: bytes=0-1023 answered {r.status_code}, {len(body)} bytes, Content-Range {r.headers.get('Content-Range')}")


def cog_checks(venv_bin: Path, href: str, label: str, env: dict[str, str], work: Path) -> None:
    """`rio cogeo validate` (the CLI, for its verdict line) and rio_cogeo.cogeo.cog_validate (for the
    errors and warnings it found)."""
    cli = subprocess.run([str(venv_bin / "rio"), "cogeo", "validate", href], capture_output=True, text=True,
                         env=env, timeout=600)
    verdict = (cli.stdout.strip().splitlines() or [cli.stderr.strip()[-300:]])[-1]
    code = (
        "import json, sys\n"
        "from rio_cogeo.cogeo import cog_validate, cog_info\n"
        "ok, errors, warns = cog_validate(sys.argv[1], quiet=True)\n"
        "info = json.loads(cog_info(sys.argv[1]).model_dump_json(by_alias=True, exclude_none=True))\n"
        "print(json.dumps({'valid': ok, 'errors': errors, 'warnings': warns, 'info': info}))\n"
    )
    p = subprocess.run([str(venv_bin / "python"), "-c", code, href], capture_output=True, text=True, env=env, timeout=600)
    (work / f"cogeo-{safe(label)}.out").write_text(cli.stdout + cli.stderr + "\n---\n" + p.stdout + p.stderr)
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        row(f"rio cogeo validate {label}", "ERROR", f"{verdict} | {(p.stderr or p.stdout).strip()[-300:]}")
        return
    info = res["info"]
    prof = info.get("Profile", {})
    ifd = info.get("IFD", [])
    geo = info.get("GEO", {})
    block = "x".join(map(str, ifd[0].get("Blocksize", []))) if ifd else "?"
    detail = (f"{verdict.replace(href, '<href>')}; {prof.get('Width')}x{prof.get('Height')} {prof.get('Dtype')} "
              f"{geo.get('CRS')}, {'tiled' if prof.get('Tiled') else 'striped'} {block}, {info.get('Compression')}, "
              f"nodata {prof.get('Nodata')}, {'palette, ' if prof.get('ColorMap') else ''}"
              f"{len(ifd) - 1 if ifd else '?'} overview(s)")
    if res["errors"]:
        detail += "; errors: " + " | ".join(res["errors"])
    if res["warnings"]:
        detail += "; warnings: " + " | ".join(res["warnings"])
    result = "FAIL" if not res["valid"] else ("WARN" if res["warnings"] else "PASS")
    row(f"rio cogeo validate {label}", result, detail)


def read_cog(href: str, env: dict[str, str]) -> dict | None:
    import numpy as np
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.Env(**{k: env[k] for k in ("GDAL_HTTP_HEADERS", "GDAL_DISABLE_READDIR_ON_OPEN",
                                                "CPL_VSIL_CURL_ALLOWED_EXTENSIONS")}):
        with rasterio.open(href) as ds:
            values = None
            if ds.count == 1 and ds.dtypes[0] == "uint8" and ds.width * ds.height <= 64_000_000:
                values = [int(v) for v in np.unique(ds.read(1))]
            return {
                "width": ds.width, "height": ds.height, "count": ds.count, "dtypes": list(ds.dtypes),
                "nodata": ds.nodata if ds.nodata is None else (int(ds.nodata) if float(ds.nodata).is_integer() else ds.nodata),
                "epsg": ds.crs.to_epsg() if ds.crs else None, "res": ds.res[0],
                "bounds_4326": list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)),
                "values": values,
                "colormap": ds.colormap(1) if ds.count == 1 and ds.colorinterp[0].name == "palette" else None,
            }


# ---------------------------------------------------------------------------------------------
# Tiles


def decode_png(data: bytes):
    """RGBA 256x256 (a smaller PNG, e.g. a blank tile, is scaled up)."""
    import numpy as np
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert("RGBA")
    if im.size != (256, 256):
        im = im.resize((256, 256), Image.NEAREST)
    return np.asarray(im)


def compare(ours, theirs) -> dict:
    import numpy as np

    oa, ta = ours[..., 3] > 0, theirs[..., 3] > 0
    same_rgb = np.all(ours[..., :3] == theirs[..., :3], axis=-1)
    both = oa & ta
    return {
        "pixels": int(oa.size),
        "ours_opaque": int(oa.sum()),
        "theirs_opaque": int(ta.sum()),
        "both_opaque": int(both.sum()),
        "both_same_colour": int((both & same_rgb).sum()),
        "only_ours": int((oa & ~ta).sum()),
        "only_theirs": int((ta & ~oa).sum()),
        "match": int(((~oa & ~ta) | (both & same_rgb)).sum()),
    }


def tile_list(bbox, z: int, limit: int):
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(*bbox, [z]))
    if len(tiles) > limit:
        step = len(tiles) / limit
        tiles = [tiles[int(i * step)] for i in range(limit)]
    return tiles


def tile_comparison(api: Api, out: dict, item: dict, env: dict[str, str], objects: Path | None,
                    limit: int, work: Path) -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient
    from titiler.core.factory import TilerFactory

    label = short(out["id"])
    if out.get("kind") != "class":
        row(f"TiTiler tiles {label}", "SKIP", f"{out.get('kind')} map: only class maps have a colormap to compare with")
        return
    os.environ.update({k: env[k] for k in ("GDAL_HTTP_HEADERS", "GDAL_DISABLE_READDIR_ON_OPEN",
                                           "CPL_VSIL_CURL_ALLOWED_EXTENSIONS")})
    app = FastAPI()
    app.include_router(TilerFactory().router, prefix="/cog")
    client = TestClient(app)
    legend = out.get("classes") or []
    cmap = {str(c["id"]): [int(c["color"][1:3], 16), int(c["color"][3:5], 16), int(c["color"][5:7], 16), 255]
            for c in legend}
    href = item["assets"]["data"]["href"]
    sources = [("UTM COG asset href", href)]
    if objects is not None and out.get("web_key"):
        web = objects / out["web_key"]
        if web.exists():
            sources.append(("web-mercator COG", str(web)))
        else:
            note(f"web-mercator COG not found at {web}; TiTiler compared with the UTM COG only")
    zmax = int(out.get("max_zoom") or item["properties"].get("groundwork:zoom", [0, 14])[1])
    zmin = int(out.get("min_zoom") or zmax)
    tiles = tile_list(item["bbox"], zmax, limit)
    if zmin < zmax:
        tiles += tile_list(item["bbox"], zmin, 2)
    tdir = work / "tiles"
    tdir.mkdir(exist_ok=True)
    for name, src in sources:
        totals: dict[str, int] = {}
        per_tile = []
        errors = []
        for t in tiles:
            r = api.get(f"/api/v1/outputs/{out['id']}/tiles/{t.z}/{t.x}/{t.y}.png")
            if r.status_code != 200:
                errors.append(f"ours {t.z}/{t.x}/{t.y}: {r.status_code}")
                continue
            q = {"url": src, "bidx": 1, "colormap": json.dumps(cmap), "resampling": "nearest",
                 "reproject": "nearest", "tilesize": 256}
            tr = client.get(f"/cog/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png", params=q)
            if tr.status_code == 404 and "outside" in tr.text.lower():
                theirs = None
            elif tr.status_code != 200:
                errors.append(f"titiler {t.z}/{t.x}/{t.y}: {tr.status_code} {tr.text[:200]}")
                continue
            else:
                theirs = tr.content
            (tdir / f"{label}-{t.z}-{t.x}-{t.y}-ours.png").write_bytes(r.content)
            a = decode_png(r.content)
            if theirs is None:
                import numpy as np
                b = np.zeros_like(a)
            else:
                key = "utm" if name.startswith("UTM") else "web"
                (tdir / f"{label}-{t.z}-{t.x}-{t.y}-titiler-{key}.png").write_bytes(theirs)
                b = decode_png(theirs)
            c = compare(a, b)
            for k, v in c.items():
                totals[k] = totals.get(k, 0) + v
            per_tile.append((f"{t.z}/{t.x}/{t.y}", c))
        if not per_tile:
            row(f"TiTiler vs our tiles ({name}) {label}", "ERROR", "; ".join(errors[:4]))
            continue
        frac = totals["match"] / totals["pixels"]
        union = totals["ours_opaque"] + totals["only_theirs"]
        data_frac = totals["both_same_colour"] / union if union else 1.0
        worst = min(per_tile, key=lambda p: p[1]["match"])
        detail = (f"{len(per_tile)} tiles (z{zmax}" + (f" and z{zmin}" if zmin < zmax else "") + "): "
                  f"{totals['match']}/{totals['pixels']} pixels match ({frac:.4%}); over data pixels "
                  f"{data_frac:.4%} ({totals['both_same_colour']} same colour, "
                  f"{totals['both_opaque'] - totals['both_same_colour']} other colour, "
                  f"{totals['only_ours']} only ours, {totals['only_theirs']} only TiTiler's); "
                  f"worst tile {worst[0]} {worst[1]['match'] / worst[1]['pixels']:.2%}")
        if errors:
            detail += "; errors: " + "; ".join(errors[:4])
        result = "PASS" if frac == 1.0 else ("INFO" if frac >= 0.95 else "WARN")
        if name.startswith("web") and frac < 1.0:
            result = "WARN"  # same COG, same nearest sampling: should be identical
        row(f"TiTiler vs our tiles ({name}) {label}", result, detail)
        (work / f"tiles-{label}-{'utm' if name.startswith('UTM') else 'web'}.json").write_text(
            json.dumps([{"tile": k, **v} for k, v in per_tile], indent=1))


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--project", action="append", default=[])
    ap.add_argument("--schemas", required=True, type=Path, help="published extension schemas, <name>/<version>/schema.json")
    ap.add_argument("--test-schemas", type=Path)
    ap.add_argument("--objects", type=Path, help="local object store folder (file://), for the web-mercator COG")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--tiles", type=int, default=12, help="tiles compared at the full-resolution zoom")
    a = ap.parse_args()
    EXTENSIONS.update(extensions(a.schemas))
    venv_bin = Path(sys.executable).parent
    a.work.mkdir(parents=True, exist_ok=True)
    api = Api(a.base, a.token)
    env = gdal_env(a.token)

    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    import rasterio

    row("tools", "INFO", ", ".join(f"{n} {ver(n)}" for n in (
        "stac-validator", "stac_valid", "pystac", "jsonschema", "stac-pydantic", "rio-cogeo", "rasterio",
        "titiler.core", "rio-tiler")) + f", GDAL {rasterio.__gdal_version__}")
    smap = schema_map(a.schemas)
    config = a.work / "schema-map.json"
    config.write_text(json.dumps({"schemas": smap}, indent=1))
    row("schemas offline", "PASS",
        f"{len(smap)} schema URLs mapped to local files (STAC 1.1.0 core + GeoJSON from pystac's wheel; "
        f"extensions from {a.schemas}: " + ", ".join(short_schema(u) for u in EXTENSIONS) + ")")
    if a.test_schemas:
        compare_test_schemas(a.schemas, a.test_schemas)

    projects = a.project or [p["id"] for p in api.pages("/api/v1/projects")]
    n_items = 0
    for pid in projects:
        outs = api.pages(f"/api/v1/projects/{pid}/outputs")
        if not outs:
            continue
        pl = short(pid)
        coll_url = api.url(f"/api/v1/projects/{pid}/stac")
        coll = api.json(coll_url)
        (a.work / f"collection-{pl}.json").write_text(json.dumps(coll, indent=1))
        fc_url = f"{coll_url}/items"
        fc = api.json(fc_url)
        (a.work / f"items-{pl}.json").write_text(json.dumps(fc, indent=1))
        run_stac_validator(venv_bin, coll_url, a.token, config, [], f"collection {pl}", a.work)
        link_checks(api, f"collection {pl}", coll)
        run_stac_validator(venv_bin, fc_url, a.token, config, ["--item-collection"], f"items {pl}", a.work)
        declared = {u for d in [coll, *fc.get("features", [])] for u in d.get("stac_extensions") or []}
        unknown = sorted(declared - set(EXTENSIONS))
        if unknown:
            row(f"schemas offline {pl}", "ERROR", f"no local copy of {unknown}: the validators cannot check them here")
        objs = [(f"collection {pl}", coll)]
        item_links = [l["href"] for l in coll.get("links", []) if l.get("rel") == "item"]
        fc_ids = sorted(f["id"] for f in fc.get("features", []))
        link_ids = sorted(h.rstrip("/").rsplit("/", 1)[-1] for h in item_links)
        out_ids = sorted(o["id"] for o in outs)
        row(f"collection links {pl}", "PASS" if fc_ids == link_ids == out_ids else "FAIL",
            f"{len(out_ids)} outputs, {len(link_ids)} item links, {len(fc_ids)} features in /items")
        by_id = {o["id"]: o for o in outs}
        for href in item_links:
            item = api.json(href)
            out = by_id.get(item["id"], {})
            il = short(item["id"])
            n_items += 1
            (a.work / f"item-{il}.json").write_text(json.dumps(item, indent=1))
            run_stac_validator(venv_bin, href, a.token, config, [], f"item {il}", a.work)
            link_checks(api, f"item {il}", item)
            objs.append((f"item {il}", item))
            extension_field_names(f"item {il}", item, a.schemas)
            legend = out.get("classes") or []
            try:
                pystac_extension_checks(f"item {il}", item, legend)
            except Exception as e:
                row(f"pystac extensions item {il}", "ERROR", f"{type(e).__name__}: {e}")
            for key, asset in item.get("assets", {}).items():
                if "geotiff" not in (asset.get("type") or ""):
                    continue
                lab = f"{il}/{key}"
                range_check(api, asset["href"], lab)
                cog_checks(venv_bin, asset["href"], lab, env, a.work)
                if key == "data":
                    try:
                        info = read_cog(asset["href"], env)
                    except Exception as e:
                        info = None
                        row(f"read COG {lab}", "ERROR", f"{type(e).__name__}: {e}")
                    stac_vs_cog(f"item {il}", item, info, legend)
            if a.objects is not None and out.get("web_key"):
                web = a.objects / out["web_key"]
                if web.exists():
                    cog_checks(venv_bin, str(web), f"{il}/web-mercator (object store)", env, a.work)
            if out:
                try:
                    tile_comparison(api, out, item, env, a.objects, a.tiles, a.work)
                except Exception as e:
                    row(f"TiTiler tiles {il}", "ERROR", f"{type(e).__name__}: {e}")
        pystac_checks(objs, a.schemas)
        try:
            stac_pydantic_checks(objs, (f"items {pl}", fc))
        except ImportError as e:
            row("stac-pydantic", "SKIP", str(e))
    if n_items == 0:
        row("outputs", "FAIL", "no published output found: nothing to validate")

    # Summary
    print()
    print("| check | result | detail |")
    print("|---|---|---|")
    for c, r, d in ROWS:
        print(f"| {c} | {r} | {d.replace('|', '/')} |")
    counts = {k: sum(1 for _, r, _ in ROWS if r == k) for k in ("PASS", "FAIL", "WARN", "INFO", "SKIP", "ERROR")}
    print()
    print("summary: " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
