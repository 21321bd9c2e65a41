"""Open311 GeoReport v2 (services/intake/open311.py): the documents in both formats against
the spec's own examples, the form a 311 client posts (the spec's example request), its
checks and its mapping onto a patrol app's report, and the address a person writes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from services.intake import open311, views
from services.intake.cases import Case
from services.intake.open311 import Document, Open311Error
from services.intake.reports import summarise
from shared.reference import ReferenceData, load_reference

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 in 雨城区
TONGGONG = "511802001001101"  # 通工小区
TONGGONG_1 = "511802001001101001"  # 通工小区 1栋
KEY_ID = "0123456789ab"


def ref() -> ReferenceData:
    return load_reference(DEMO)


# -- the spec's examples (https://wiki.open311.org/GeoReport_v2, Service_Discovery) ----------
# Reproduced from the spec. Its JSON shows ids as bare 001 / 006, which no JSON parser
# takes; they are strings here. Only the structure (names, nesting, lists) is compared.
SPEC_SERVICES_XML = """<?xml version="1.0" encoding="utf-8"?>
<services>
    <service>
        <service_code>001</service_code>
        <service_name>Cans left out 24x7</service_name>
        <description>Garbage or recycling cans that have been left out for more than 24 hours after collection. Violators will be cited.</description>
        <metadata>true</metadata>
        <type>realtime</type>
        <keywords>lorem, ipsum, dolor</keywords>
        <group>sanitation</group>
    </service>
    <service>
        <service_code>002</service_code>
        <metadata>true</metadata>
        <type>realtime</type>
        <keywords>lorem, ipsum, dolor</keywords>
        <group>street</group>
        <service_name>Construction plate shifted</service_name>
        <description>Metal construction plate covering the street or sidewalk has been moved.</description>
    </service>
</services>"""  # noqa: E501
SPEC_SERVICES_JSON = [
    {"service_code": "001", "service_name": "Cans left out 24x7",
     "description": "Garbage or recycling cans that have been left out for more than 24 hours "
                    "after collection. Violators will be cited.",
     "metadata": True, "type": "realtime", "keywords": "lorem, ipsum, dolor",
     "group": "sanitation"},
    {"service_code": "002", "metadata": True, "type": "realtime",
     "keywords": "lorem, ipsum, dolor", "group": "street",
     "service_name": "Construction plate shifted",
     "description": "Metal construction plate covering the street or sidewalk has been moved."},
]
SPEC_DEFINITION_XML = """<?xml version="1.0" encoding="utf-8"?>
<service_definition>
    <service_code>DMV66</service_code>
    <attributes>
        <attribute>
            <variable>true</variable>
            <code>WHISHETN</code>
            <datatype>singlevaluelist</datatype>
            <required>true</required>
            <datatype_description></datatype_description>
            <order>1</order>
            <description>What is the ticket/tag/DL number?</description>
            <values>
                <value>
                    <key>123</key>
                    <name>Ford</name>
                </value>
                <value>
                    <key>124</key>
                    <name>Chrysler</name>
                </value>
            </values>
        </attribute>
    </attributes>
</service_definition>"""
SPEC_DEFINITION_JSON = {
    "service_code": "DMV66",
    "attributes": [{
        "variable": True, "code": "WHISHETN", "datatype": "singlevaluelist", "required": True,
        "datatype_description": None, "order": 1,
        "description": "What is the ticket/tag/DL number?",
        "values": [{"key": 123, "name": "Ford"}, {"key": 124, "name": "Chrysler"}],
    }],
}
SPEC_POST_REQUEST = (
    "api_key=xyz&jurisdiction_id=city.gov&service_code=001&lat=37.76524078&long=-122.4212043"
    "&address_string=1234+5th+street&email=smit333%40sfgov.edu&device_id=tt222111"
    "&account_id=123456&first_name=john&last_name=smith&phone=111111111"
    "&description=A+large+sinkhole+is+destroying+the+street"
    "&media_url=http%3A%2F%2Ffarm3.static.flickr.com%2F2002%2F2212426634_5ed477a060.jpg"
    "&attribute[WHISPAWN]=123456&attribute[WHISDORN]=COISL001"
)
SPEC_POST_ANSWER_XML = """<?xml version="1.0" encoding="utf-8"?>
<service_requests>
    <request>
        <service_request_id>293944</service_request_id>
        <service_notice>
            The City will inspect and require the responsible party to correct within 24 hours and/or issue a Correction Notice or Notice of Violation of the Public Works Code
        </service_notice>
        <account_id/>
    </request>
</service_requests>"""  # noqa: E501
SPEC_POST_ANSWER_JSON = [{
    "service_request_id": 293944,
    "service_notice": "The City will inspect and require the responsible party to correct within "
                      "24 hours and/or issue a Correction Notice or Notice of Violation of the "
                      "Public Works Code",
    "account_id": None,
}]
SPEC_TOKEN_XML = """<?xml version="1.0" encoding="utf-8"?>
<service_requests>
    <request>
        <service_request_id>638344</service_request_id>
        <token>12345</token>
    </request>
</service_requests>"""
SPEC_TOKEN_JSON = [{"service_request_id": 638344, "token": 12345}]
SPEC_REQUESTS_XML = """<?xml version="1.0" encoding="utf-8"?>
<service_requests>
    <request>
        <service_request_id>638344</service_request_id>
        <status>closed</status>
        <status_notes>Duplicate request.</status_notes>
        <service_name>Sidewalk and Curb Issues</service_name>
        <service_code>006</service_code>
        <description></description>
        <agency_responsible></agency_responsible>
        <service_notice></service_notice>
        <requested_datetime>2010-04-14T06:37:38-08:00</requested_datetime>
        <updated_datetime>2010-04-14T06:37:38-08:00</updated_datetime>
        <expected_datetime>2010-04-15T06:37:38-08:00</expected_datetime>
        <address>8TH AVE and JUDAH ST</address>
        <address_id>545483</address_id>
        <zipcode>94122</zipcode>
        <lat>37.762221815</lat>
        <long>-122.4651145</long>
        <media_url>http://city.gov.s3.amazonaws.com/requests/media/638344.jpg </media_url>
    </request>
    <request>
        <service_request_id>638349</service_request_id>
        <status>open</status>
        <status_notes></status_notes>
        <service_name>Sidewalk and Curb Issues</service_name>
        <service_code>006</service_code>
        <description></description>
        <agency_responsible></agency_responsible>
        <service_notice></service_notice>
        <requested_datetime>2010-04-19T06:37:38-08:00</requested_datetime>
        <updated_datetime>2010-04-19T06:37:38-08:00</updated_datetime>
        <expected_datetime>2010-04-19T06:37:38-08:00</expected_datetime>
        <address>8TH AVE and JUDAH ST</address>
        <address_id>545483</address_id>
        <zipcode>94122</zipcode>
        <lat>37.762221815</lat>
        <long>-122.4651145</long>
        <media_url>http://city.gov.s3.amazonaws.com/requests/media/638349.jpg </media_url>
    </request>
</service_requests>"""
SPEC_REQUESTS_JSON = [{
    "service_request_id": 638344, "status": "closed", "status_notes": "Duplicate request.",
    "service_name": "Sidewalk and Curb Issues", "service_code": "006", "description": None,
    "agency_responsible": None, "service_notice": None,
    "requested_datetime": "2010-04-14T06:37:38-08:00",
    "updated_datetime": "2010-04-14T06:37:38-08:00",
    "expected_datetime": "2010-04-15T06:37:38-08:00", "address": "8TH AVE and JUDAH ST",
    "address_id": 545483, "zipcode": 94122, "lat": 37.762221815, "long": -122.4651145,
    "media_url": "http://city.gov.s3.amazonaws.com/requests/media/638344.jpg",
}]
SPEC_ERRORS_XML = """<?xml version="1.0" encoding="utf-8"?>
<errors>
    <error>
        <code>403</code>
        <description>Invalid api_key received -- can't proceed with create_request.</description>
    </error>
</errors>"""
SPEC_ERRORS_JSON = [
    {"code": 403, "description": "Invalid api_key received -- can't proceed with create_request."}
]
SPEC_DISCOVERY_XML = """<?xml version="1.0" encoding="UTF-8"?>
<discovery>
    <changeset>2011-02-03 14:18</changeset>
    <contact>You can email or call for assistance api@mycity.org +1 (555) 555-5555</contact>
    <key_service>You can request a key here: http://api.mycity.gov/api_key/request</key_service>
    <endpoints>
        <endpoint>
            <specification>http://wiki.open311.org/GeoReport_v2</specification>
            <url>http://open311.mycity.gov/v2</url>
            <changeset>2010-11-23 09:01</changeset>
            <type>production</type>
            <formats>
                <format>text/xml</format>
            </formats>
        </endpoint>
        <endpoint>
            <specification>http://wiki.open311.org/GeoReport_v2</specification>
            <url>http://open311.mycity.gov/test/v2</url>
            <changeset>2010-10-02 09:01</changeset>
            <type>test</type>
            <formats>
                <format>text/xml</format>
                <format>application/json</format>
            </formats>
        </endpoint>
    </endpoints>
</discovery>"""
SPEC_DISCOVERY_JSON = {
    "changeset": "2011-02-03 14:18",
    "contact": "You can email or call for assistance api@mycity.org +1 (555) 555-5555",
    "key_service": "You can request a key here: http://api.mycity.gov/api_key/request",
    "endpoints": [
        {"specification": "http://wiki.open311.org/GeoReport_v2",
         "url": "http://open311.mycity.gov/v2", "changeset": "2010-11-23 09:01",
         "type": "production", "formats": ["text/xml"]},
        {"specification": "http://wiki.open311.org/GeoReport_v2",
         "url": "http://open311.mycity.gov/test/v2", "changeset": "2010-10-02 09:01",
         "type": "test", "formats": ["text/xml", "application/json"]},
    ],
}


# -- comparing structures ---------------------------------------------------------------------
def xml_paths(text: str) -> set[str]:
    """Every element's path from the root (``services/service/service_code``)."""
    out: set[str] = set()

    def walk(e: ET.Element, path: str) -> None:
        out.add(path)
        for child in e:
            walk(child, f"{path}/{child.tag}")

    root = ET.fromstring(text.strip().encode())
    walk(root, root.tag)
    return out


def json_paths(value: Any, path: str = "$") -> set[str]:
    """Every key's path, ``[]`` for a list's items (``$[].service_code``)."""
    out = {path}
    if isinstance(value, dict):
        for k, v in value.items():
            out |= json_paths(v, f"{path}.{k}")
    elif isinstance(value, list):
        for v in value:
            out |= json_paths(v, f"{path}[]")
    return out


def spark(e: ET.Element) -> Any:
    """XML → JSON by the Spark convention: a plural element holds a list, another one with
    children an object, a leaf its text."""
    if e.tag in open311.PLURALS:
        return [spark(c) for c in e]
    if len(e):
        return {c.tag: spark(c) for c in e}
    return e.text


def as_text(value: Any) -> Any:
    """JSON leaves as XML carries them (text; null: an empty element)."""
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_text(v) for v in value]
    return open311._xml_text(value)


def both(doc: Document) -> tuple[Any, str]:
    """The document as parsed JSON and as XML text, checking both content types and that
    the XML says what the JSON says."""
    text, ctype = open311.render(doc, "json")
    assert ctype == "application/json; charset=utf-8"
    xml, xtype = open311.render(doc, "xml")
    assert xtype == "text/xml; charset=utf-8"
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?>\n')
    parsed = json.loads(text)
    assert spark(ET.fromstring(xml.encode())) == as_text(parsed)
    return parsed, xml


def a_case(**overrides: Any) -> Case:
    kwargs: dict[str, Any] = {
        "category": "E0402", "grid_code": TONGGONG, "building_code": TONGGONG_1,
        "description": "消防通道被车堵了，车主电话 13812345678",
        "reporter": {"kind": "app", "id": "a-1", "name": "邓海燕", "phone": "13800000001"},
        "reported_at": NOW, "media_urls": ["https://img.example/1.jpg"],
    }
    kwargs.update(overrides)
    return Case("20261123-000001", **kwargs)


def request_of(case: Case) -> dict[str, Any]:
    r = ref()
    category = r.catalogue.get(case.category)
    assert category is not None
    public = views.public_view(case, "区消防救援大队", category.name)
    return open311.request_view(public, service_notice=open311.service_notice(category,
                                                                               r.catalogue),
                                place=r.grid.get(case.building_code or case.grid_code),
                                grid=r.grid)


# -- the documents against the spec's ---------------------------------------------------------
def test_services_are_the_spec_services_one_per_minor_category() -> None:
    cat = ref().catalogue
    doc = Document("services", [open311.service_view(c, cat) for c in cat.categories.values()])
    parsed, xml = both(doc)
    assert json_paths(parsed) == json_paths(SPEC_SERVICES_JSON)
    assert xml_paths(xml) == xml_paths(SPEC_SERVICES_XML)
    assert len(parsed) == len(cat.categories) == 39
    lamp = next(s for s in parsed if s["service_code"] == "C0101")
    assert lamp["service_name"] == "路灯" and lamp["group"] == "公用设施"
    assert lamp["metadata"] is True and lamp["type"] == "realtime"
    assert "Street lamp" in lamp["keywords"] and "部件" in lamp["keywords"]
    assert "区市政公用服务中心" in lamp["description"]
    assert "1 hour" in lamp["description"] and "2 working days" in lamp["description"]


def test_a_service_definition_has_typed_attributes_as_the_spec_shows() -> None:
    cat = ref().catalogue
    lamp, fire_lane = cat.get("C0101"), cat.get("E0402")
    assert lamp is not None and fire_lane is not None
    parsed, xml = both(open311.service_definition(lamp))
    assert json_paths(parsed) == json_paths(SPEC_DEFINITION_JSON)
    assert xml_paths(xml) == xml_paths(SPEC_DEFINITION_XML)
    attrs = {a["code"]: a for a in parsed["attributes"]}
    assert list(attrs) == ["severity", "occurred_at", "impact", "location_detail",
                           "asset_code", "quantity"]  # a component (部件) has a plate number
    assert {a["datatype"] for a in attrs.values()} == set(open311.DATATYPES)
    assert [a["order"] for a in attrs.values()] == [1, 2, 3, 4, 5, 6]
    assert all(a["variable"] is True and a["required"] is False for a in attrs.values())
    assert attrs["severity"]["values"] == [{"key": "normal", "name": "一般 (normal)"},
                                           {"key": "urgent", "name": "紧急 (urgent)"}]
    event, _ = both(open311.service_definition(fire_lane))
    assert [a["code"] for a in event["attributes"]] == ["severity", "occurred_at", "impact",
                                                        "location_detail"]


def test_a_request_is_the_spec_request_with_no_reporter_in_it() -> None:
    parsed, xml = both(Document("service_requests", [request_of(a_case())]))
    assert json_paths(parsed) == json_paths(SPEC_REQUESTS_JSON)
    assert xml_paths(xml) == xml_paths(SPEC_REQUESTS_XML)
    (req,) = parsed
    assert list(req) == list(SPEC_REQUESTS_JSON[0])  # the spec's order too
    assert req["status"] == "open" and req["service_code"] == "E0402"
    assert req["service_name"] == "消防通道堵塞"
    assert req["address"] == "1栋, 通工小区, 桐梓林一片区, 桐梓林社区, 青江街道, 雨城区"
    assert req["address_id"] == TONGGONG_1
    assert (req["lat"], req["long"]) == (29.9735, 102.99683)  # the building's middle
    assert req["media_url"] == "https://img.example/1.jpg"
    assert "消防救援" in req["service_notice"] and "30 minutes" in req["service_notice"]
    for text in (json.dumps(parsed, ensure_ascii=False), xml):
        assert "13812345678" not in text and "138****5678" in text  # typed into the text
        assert "13800000001" not in text and "邓海燕" not in text and "a-1" not in text


def test_status_is_open_or_closed_with_notes_from_our_states() -> None:
    case = a_case()
    case.mark_duplicate("20261122-000009", 12.0, NOW)
    req = request_of(case)
    assert req["status"] == "closed" and "20261122-000009" in req["status_notes"]
    assert req["expected_datetime"] is None
    assert request_of(a_case(lat=29.9725, lng=102.9975))["lat"] == 29.9725  # the point


def test_the_post_answer_is_the_spec_answer_with_the_token_too() -> None:
    parsed, xml = both(open311.created("20261123-000001", "o311-" + "0" * 32, "notice", None))
    # realtime: the id at once; the token is extra, for tokens/{token}
    assert json_paths(parsed) == json_paths(SPEC_POST_ANSWER_JSON) | {"$[].token"}
    assert xml_paths(xml) == xml_paths(SPEC_POST_ANSWER_XML) | {"service_requests/request/token"}
    assert parsed == [{"service_request_id": "20261123-000001", "token": "o311-" + "0" * 32,
                       "service_notice": "notice", "account_id": None}]


def test_a_token_an_error_and_discovery_are_the_spec_documents() -> None:
    parsed, xml = both(open311.token_document("o311-" + "0" * 32, "20261123-000001"))
    assert json_paths(parsed) == json_paths(SPEC_TOKEN_JSON)
    assert xml_paths(xml) == xml_paths(SPEC_TOKEN_XML)

    parsed, xml = both(Open311Error(403, "api_key: unknown API key").document())
    assert json_paths(parsed) == json_paths(SPEC_ERRORS_JSON)
    assert xml_paths(xml) == xml_paths(SPEC_ERRORS_XML)
    assert parsed == [{"code": 403, "description": "api_key: unknown API key"}]

    parsed, xml = both(open311.discovery("http://127.0.0.1:8000/open311/v2", "2026.1", "雨城区"))
    assert json_paths(parsed) == json_paths(SPEC_DISCOVERY_JSON)
    assert xml_paths(xml) == xml_paths(SPEC_DISCOVERY_XML)
    (endpoint,) = parsed["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["formats"] == ["text/xml", "application/json"]


def test_xml_escapes_markup_and_replaces_what_xml_cannot_carry() -> None:
    doc = Document("service_requests", [{"description": "a <b> & c\x0bd", "lat": None,
                                         "flag": True, "at": NOW, "n": 1.5}])
    xml, _ = open311.render(doc, "xml")
    (req,) = ET.fromstring(xml.encode())
    assert req.findtext("description") == "a <b> & c\ufffdd"
    assert req.findtext("lat") == "" and req.findtext("flag") == "true"
    assert req.findtext("at") == "2026-11-23T01:00:00+00:00" and req.findtext("n") == "1.5"


# -- the form a client posts ------------------------------------------------------------------
def test_the_spec_example_request_parses_and_names_what_we_do_not_know() -> None:
    items = open311.parse_form(SPEC_POST_REQUEST.encode(), open311.FORM_TYPE)
    form = open311.PostForm().load(open311.present(dict(items)))
    assert form == {
        "jurisdiction_id": "city.gov", "service_code": "001", "lat": 37.76524078,
        "lng": -122.4212043, "address_string": "1234 5th street", "email": "smit333@sfgov.edu",
        "device_id": "tt222111", "account_id": "123456", "first_name": "john",
        "last_name": "smith", "phone": "111111111",
        "description": "A large sinkhole is destroying the street",
        "media_url": "http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg",
    }
    assert open311.attributes_of(items) == {"WHISPAWN": ["123456"], "WHISDORN": ["COISL001"]}
    r = ref()
    with pytest.raises(Open311Error) as err:
        open311.check_jurisdiction(form["jurisdiction_id"], r.grid.root)
    assert err.value.status == 404 and "jurisdiction_id" in err.value.descriptions[0]
    category = r.catalogue.get("E0402")
    assert category is not None
    with pytest.raises(Open311Error) as err:
        open311.check_attributes(category, open311.attributes_of(items))
    assert err.value.status == 400
    assert [d.split(":")[0] for d in err.value.descriptions] == ["attribute[WHISPAWN]",
                                                                 "attribute[WHISDORN]"]
    # the spec's point is in San Francisco: outside every cell of 雨城区
    location, by_address = open311.location_of(form, r.grid)
    assert location == {"lat": 37.76524078, "lng": -122.4212043} and not by_address
    body = open311.load_report(open311.report_of(form, {}, category, location, "o311-x"),
                               by_address)
    with pytest.raises(ValidationError) as verr:
        summarise(body, r, NOW)
    problem = open311.bad_request(verr.value.messages, open311.report_fields(by_address))
    assert {d.split(":")[0] for d in problem.descriptions} == {"lat", "long"}
    assert "outside every grid cell" in problem.descriptions[0]


def form(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "service_code": "C0101", "address_string": "通工小区 1栋 3单元门口",
        "description": "路灯不亮", "first_name": "海燕", "last_name": "邓",
        "phone": "13800000001", "account_id": "acct-7",
        "media_url": "https://img.example/lamp.jpg",
    }
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not ...}


def test_a_form_maps_onto_a_patrol_apps_report() -> None:
    r = ref()
    lamp = r.catalogue.get("C0101")
    assert lamp is not None
    items = [*form().items(), ("attribute[severity]", "urgent"),
             ("attribute[occurred_at]", "2026-11-23T08:30:00+08:00"),
             ("attribute[impact][]", "traffic"), ("attribute[impact][]", "safety"),
             ("attribute[quantity]", "2"), ("attribute[asset_code]", "LD-0012")]
    loaded = open311.PostForm().load(open311.present(dict(items)))
    values = open311.check_attributes(lamp, open311.attributes_of(items))
    location, by_address = open311.location_of(loaded, r.grid)
    assert location == {"grid_code": TONGGONG_1} and by_address
    body = open311.load_report(open311.report_of(loaded, values, lamp, location, "o311-a"),
                               by_address)
    assert body["report_id"] == "o311-a" and body["category"] == "C0101"
    assert body["grid_code"] == TONGGONG_1 and body["severity"] == "urgent"
    assert body["occurred_at"] == datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    assert body["description"] == (
        "路灯不亮\n[Open311] 影响: 影响通行 (blocks the way)、存在安全隐患 (a safety risk); "
        "部件编号: LD-0012; 数量: 2; 地址: 通工小区 1栋 3单元门口")
    assert body["reporter"] == {"kind": "app", "id": "acct-7", "name": "邓海燕",
                                "phone": "13800000001", "webhook_url": None}
    assert body["media_urls"] == ["https://img.example/lamp.jpg"]
    summary = summarise(body, r, NOW)
    assert summary["location"]["building_code"] == TONGGONG_1


def test_the_reporter_is_the_account_else_the_device_else_a_hash_of_the_email() -> None:
    assert open311.reporter_of({"first_name": "John", "last_name": "Smith", "device_id": "d1",
                                "email": "J@x.org"}) == \
        {"kind": "app", "id": "device:d1", "name": "John Smith", "phone": ""}
    by_mail = open311.reporter_of({"email": " J@X.org"})
    assert by_mail["id"].startswith("email:") and "x.org" not in by_mail["id"].lower()
    assert by_mail == open311.reporter_of({"email": "j@x.org"})
    assert open311.reporter_of({}) == {"kind": "app", "id": "", "name": "", "phone": ""}


def test_a_form_without_a_description_is_the_service_name() -> None:
    r = ref()
    lamp = r.catalogue.get("C0101")
    assert lamp is not None
    body = open311.report_of(form(description=..., address_string=...), {}, lamp,
                             {"grid_code": TONGGONG}, "o311-b")
    assert body["description"] == "路灯" and body["severity"] == "normal"


@pytest.mark.parametrize(("overrides", "named"), [
    ({"service_code": ...}, "service_code"),
    ({"address_string": ...}, "lat"),  # no location at all
    ({"lat": "29.97"}, "long"),
    ({"lat": "91", "long": "102"}, "lat"),
    ({"email": "not-an-email"}, "email"),
    ({"address_id": "通工小区"}, "address_id"),
    ({"first_name": "x" * 40}, "first_name"),
])
def test_a_bad_form_field_is_named(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as err:
        open311.PostForm().load(open311.present(form(**overrides)))
    assert named in err.value.messages, err.value.messages
    problem = open311.bad_request(err.value.messages)
    assert problem.status == 400 and problem.descriptions[0].startswith(f"{named}: ")


@pytest.mark.parametrize(("overrides", "named"), [
    ({"phone": "call me"}, "phone"),
    ({"media_url": "ftp://x/y.jpg"}, "media_url"),
    ({"description": "长" * 2001}, "description"),
])
def test_what_a_report_refuses_is_named_by_its_open311_field(
        overrides: dict[str, Any], named: str) -> None:
    lamp = ref().catalogue.get("C0101")
    assert lamp is not None
    loaded = open311.PostForm().load(open311.present(form(**overrides)))
    with pytest.raises(Open311Error) as err:
        open311.load_report(open311.report_of(loaded, {}, lamp, {"grid_code": TONGGONG}, "o311-c"),
                            False)
    assert err.value.status == 400 and err.value.descriptions[0].startswith(f"{named}: ")


@pytest.mark.parametrize(("items", "error"), [
    ([("attribute[severity]", "panic")], "attribute[severity]: 'panic' is not one of normal"),
    ([("attribute[severity]", "urgent"), ("attribute[severity]", "normal")],
     "attribute[severity]: takes one value"),
    ([("attribute[impact][]", "traffic"), ("attribute[impact][]", "noise")],
     "attribute[impact]: unknown value(s) 'noise'"),
    ([("attribute[quantity]", "many")], "attribute[quantity]: 'many' is not a number"),
    ([("attribute[quantity]", "nan")], "attribute[quantity]: must be a number above 0"),
    ([("attribute[quantity]", "-1")], "attribute[quantity]: must be a number above 0"),
    ([("attribute[occurred_at]", "yesterday")], "attribute[occurred_at]: 'yesterday'"),
    ([("attribute[occurred_at]", "2026-11-23T08:30:00")], "attribute[occurred_at]: "),
    ([("attribute[asset_code]", "a\nb")], "attribute[asset_code]: a string has no line breaks"),
    ([("attribute[asset_code]", "x" * 33)], "attribute[asset_code]: at most 32 characters"),
    ([("attribute[location_detail]", "   ")], "attribute[location_detail]: must not be blank"),
    ([("attribute[colour]", "red")], "attribute[colour]: service C0101 has no attribute"),
])
def test_attributes_are_checked_against_the_service_definition(
        items: list[tuple[str, str]], error: str) -> None:
    lamp = ref().catalogue.get("C0101")
    assert lamp is not None
    with pytest.raises(Open311Error) as err:
        open311.check_attributes(lamp, open311.attributes_of(items))
    assert err.value.status == 400 and err.value.descriptions[0].startswith(error), \
        err.value.descriptions


def test_attribute_fields_are_parsed_as_the_spec_writes_them() -> None:
    assert open311.attributes_of([("attribute[a]", "1"), ("attribute[b][]", "x"),
                                  ("attribute[b][]", "y"), ("attribute[c]", ""),
                                  ("other", "z")]) == {"a": ["1"], "b": ["x", "y"]}
    for bad in ("attribute", "attribute[]", "attribute[a", "attribute[a][x]"):
        with pytest.raises(Open311Error):
            open311.attributes_of([(bad, "1")])


def test_the_token_is_the_key_the_form_in_any_order_and_the_day() -> None:
    items = open311.parse_form(SPEC_POST_REQUEST.encode(), "")

    def token(key_id: str = KEY_ID, form: list[tuple[str, str]] = items,
              at: datetime = NOW) -> str:
        return open311.tokens_for(key_id, form, at)[0]

    assert open311.TOKEN.match(token())
    assert token(form=list(reversed(items))) == token()  # a retry
    assert token(form=[("api_key", "other"), *items[1:]]) == token()  # not the secret
    assert token(form=[*items, ("email", "")]) == token()  # empty: as if not sent
    assert token(at=NOW + timedelta(hours=22)) == token()  # the same (UTC) day
    assert token("ba9876543210") != token()  # another client
    assert token(form=[*items[:-1], ("description", "x")]) != token()
    tomorrow = NOW + timedelta(days=1)
    assert token(at=tomorrow) != token()
    assert open311.tokens_for(KEY_ID, items, tomorrow)[1] == token()  # looked up: a retry?


@pytest.mark.parametrize(("raw", "mimetype", "error"), [
    (b"a=1", "application/json", "send the request as application/x-www-form-urlencoded"),
    (b"a=%FF", open311.FORM_TYPE, "the form is not UTF-8"),
    (b"description=a%00b", open311.FORM_TYPE, "description: holds a character"),
    (b"&".join(b"f%d=1" % i for i in range(201)), open311.FORM_TYPE, "at most 200 form fields"),
])
def test_a_form_that_is_not_one_is_a_400(raw: bytes, mimetype: str, error: str) -> None:
    with pytest.raises(Open311Error) as err:
        open311.parse_form(raw, mimetype)
    assert err.value.status == 400 and err.value.descriptions[0].startswith(error)


# -- the address a person writes --------------------------------------------------------------
@pytest.mark.parametrize(("text", "code"), [
    ("通工小区", TONGGONG),
    ("通工小区1栋", TONGGONG_1),
    ("1栋, 通工小区, 桐梓林社区, 青江街道, 雨城区, 雅安市 625000", TONGGONG_1),
    ("通工小区 11栋", TONGGONG),  # no 11栋: 1栋 is not in it
    (TONGGONG_1, TONGGONG_1),
])
def test_an_address_string_names_a_compound_or_a_building(text: str, code: str) -> None:
    assert open311.locate_address(ref().grid, text).code == code


@pytest.mark.parametrize(("text", "error"), [
    ("1栋", "names no compound"),  # every compound has one
    ("通工小区, 河北街道", "names no compound"),  # not in that street
    ("通工小区 汉都华府小区", "names several places"),
    ("1234 5th street", "names no compound"),
    ("桐梓林社区", "names no compound"),  # above the cells
    ("511802001", "is a street"),
])
def test_an_address_string_that_names_no_one_place_says_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        open311.locate_address(ref().grid, text)


# -- GET requests' arguments ------------------------------------------------------------------
def test_the_window_is_at_most_90_days_the_last_90_by_default() -> None:
    day = timedelta(days=1)
    assert open311.window(None, None, NOW) == (NOW - 90 * day, NOW)
    assert open311.window(NOW - 10 * day, None, NOW) == (NOW - 10 * day, NOW)
    assert open311.window(NOW - 100 * day, None, NOW) == (NOW - 100 * day, NOW - 10 * day)
    assert open311.window(None, NOW - day, NOW) == (NOW - 91 * day, NOW - day)
    assert open311.window(NOW - 90 * day, NOW, NOW) == (NOW - 90 * day, NOW)
    for start, end, error in ((NOW - 91 * day, NOW, "may span at most 90 days"),
                              (NOW, NOW - day, "end_date: lies before start_date")):
        with pytest.raises(Open311Error) as err:
            open311.window(start, end, NOW)
        assert err.value.status == 400 and error in err.value.descriptions[0]


def test_the_requests_query_takes_comma_lists_and_caps_the_page() -> None:
    q = open311.RequestsQuery().load(open311.present({
        "service_request_id": "20261123-000001, 20261123-000002", "service_code": "E0101,C0101",
        "status": "open,closed", "start_date": "2026-11-01T00:00:00Z", "end_date": "",
        "page": "2", "page_size": "10", "jurisdiction_id": "511802", "cache": "x"}))
    assert q["service_request_id"] == ["20261123-000001", "20261123-000002"]
    assert q["service_code"] == ["E0101", "C0101"] and q["status"] == ["open", "closed"]
    assert q["start_date"] == datetime(2026, 11, 1, tzinfo=UTC) and "end_date" not in q
    assert (q["page"], q["page_size"]) == (2, 10)
    assert open311.RequestsQuery().load({})["page_size"] == open311.MAX_PAGE_SIZE == 100
    for bad in ({"page_size": "101"}, {"page": "0"}, {"status": "pending"},
                {"start_date": "2026-11-01"}, {"service_request_id": ",,"},
                {"service_request_id": ",".join(str(i) for i in range(101))}):
        with pytest.raises(ValidationError) as err:
            open311.RequestsQuery().load(bad)
        assert set(err.value.messages) == set(bad), bad


def test_only_our_jurisdiction_is_served() -> None:
    root = ref().grid.root
    for ok in (None, "", "511802", "雨城区"):
        open311.check_jurisdiction(ok, root)
    with pytest.raises(Open311Error) as err:
        open311.check_jurisdiction("city.gov", root)
    assert err.value.status == 404


def test_deadlines_in_words() -> None:
    from shared.calendar import Duration

    assert open311.duration_words(Duration.parse("1h")) == ("1小时", "1 hour")
    assert open311.duration_words(Duration.parse("4wh")) == ("4个工作小时", "4 working hours")
    assert open311.duration_words(Duration.parse("30m")) == ("30分钟", "30 minutes")
    assert open311.duration_words(Duration.parse("1wd")) == ("1个工作日", "1 working day")
