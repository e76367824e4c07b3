"""The lab's answers are AWS's shapes: the checker refuses what botocore's model (and the
Stubber) would, lets through what AWS is documented to send, and every lab, in this process or
another, reports what it answered off-shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, Clients

from runbook_lib.lab import Lab
from runbook_lib.lab.lab import VALIDATE_ENV
from runbook_lib.lab.logpages import PAGE_EVENTS, filter_page, get_page
from runbook_lib.lab.shapes import check_answer

JSON = [("Content-Type", "application/x-amz-json-1.1")]
XML = [("Content-Type", "text/xml")]


def problems(*args: object) -> list[str]:
    return [p.problem for p in check_answer(*args)]  # type: ignore[arg-type]


def test_a_well_formed_answer_passes() -> None:
    body = json.dumps({"services": [{"serviceName": "carts", "runningCount": 1}]}).encode()
    assert problems("ecs", "DescribeServices", 200, JSON, body) == []


def test_wrong_types_unknown_members_and_enums_are_refused() -> None:
    """What the Stubber refuses (types, required members) and what it does not look at but AWS
    never sends: a member the shape lacks, a value outside the enum."""
    body = json.dumps(
        {
            "services": [
                {"runningCount": "1", "lab": 1, "deployments": [{"rolloutState": "STALLED"}]}
            ]
        }
    ).encode()
    found = problems("ecs", "DescribeServices", 200, JSON, body)
    assert any("services[0].runningCount" in p and "Invalid type" in p for p in found)
    assert "services[0].lab: no such member of Service" in found
    assert any("'STALLED' is not one of the model's values" in p for p in found)
    xml = b"<GetRolePolicyResponse><GetRolePolicyResult><RoleName>r</RoleName></GetRolePolicyResult></GetRolePolicyResponse>"
    assert problems("iam", "GetRolePolicy", 200, XML, xml) == [
        'Missing required parameter: "PolicyName"',
        'Missing required parameter: "PolicyDocument"',
    ]


def test_an_error_needs_an_error_code_and_the_operation_must_exist() -> None:
    assert problems("iam", "GetRole", 500, [("Content-Type", "text/html")], b"<html/>")
    good = b'{"__type": "ClientException", "message": "x"}'
    assert problems("ecs", "DescribeTasks", 400, JSON, good) == []
    assert problems("ecs", "Nope", 200, JSON, b"{}") == ["'Nope' is no operation of ecs"]


def test_what_aws_documents_sending_outside_the_model_passes() -> None:
    """aws CLI example describe-table.rst: NumberOfDecreasesToday 0 (model min 1); EC2 API
    Reference Image.platform: 'windows' (model enum 'Windows')."""
    table = {"Table": {"ProvisionedThroughput": {"NumberOfDecreasesToday": 0}}}
    assert problems("dynamodb", "DescribeTable", 200, JSON, json.dumps(table).encode()) == []
    xml = (
        b'<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><imagesSet>'
        b"<item><imageId>ami-1</imageId><platform>windows</platform></item></imagesSet>"
        b"</DescribeImagesResponse>"
    )
    assert problems("ec2", "DescribeImages", 200, XML, xml) == []
    assert problems("ec2", "DescribeImages", 200, XML, xml.replace(b"windows", b"Linux/UNIX"))


def test_a_lab_in_another_process_reports_to_the_shared_file(tmp_path: Path) -> None:
    """RUNBOOK_LAB_VALIDATE: a lab this suite does not start (a papermill kernel's) validates and
    writes each problem to the file; here a lab whose task has a health status AWS has not."""
    sink = tmp_path / "problems.jsonl"
    code = (
        "import boto3\n"
        "from runbook_lib.lab import Lab, LabConfig\n"
        "lab = Lab.start(config=LabConfig(history=1))\n"
        "ecs = boto3.client('ecs', endpoint_url=lab.endpoint_url, region_name=lab.region,\n"
        "    aws_access_key_id='lab', aws_secret_access_key='lab')\n"
        "task = next(iter(lab.scheduler.tasks.values()))\n"
        "task.moto.health_status = 'GREAT'\n"  # not a HealthStatus
        "ecs.describe_tasks(cluster='retail-store-ecs-cluster', tasks=[task.arn])\n"
        "print(lab.state()['shape_errors'])\n"
        "lab.stop()\n"
    )
    env = {**os.environ, VALIDATE_ENV: str(sink)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    [line] = sink.read_text().splitlines()
    found = json.loads(line)
    assert (found["service"], found["operation"]) == ("ecs", "DescribeTasks")
    assert "tasks[0].healthStatus: 'GREAT'" in found["problem"]
    assert "DescribeTasks" in out.stdout


def test_the_module_lab_validates(lab: Lab, aws: Clients) -> None:
    assert lab.state()["validates_responses"] is True
    aws.ecs.describe_services(cluster="retail-store-ecs-cluster", services=["carts"])
    assert lab.state()["shape_errors"] == []


# --- log pages, pure -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, PAGE_EVENTS, 2 * PAGE_EVENTS + 1])
def test_get_log_events_pages_end_with_the_token_passed_in(count: int) -> None:
    """bc:logs GetLogEvents: tokens never null, partial or empty pages before the end, and at
    the end "the same token you passed in"."""
    events = list(range(count))
    page = get_page(events, None, True, None, True)
    seen, calls = list(page.events), 1
    token = page.forward
    while True:
        page = get_page(events, token, True, None, True)
        calls += 1
        assert page.backward and page.forward and len(page.events) <= PAGE_EVENTS
        seen += page.events
        if page.forward == token:
            break
        token = page.forward
    assert seen == events and calls > 1
    whole = get_page(events, None, True, None, False)
    assert whole.events == events
    backward, token = [], None
    while True:
        page = get_page(events, token, False, None, True)
        if token is not None and page.backward == token:
            break
        backward = page.events + backward
        token = page.backward
    assert backward == events


def test_filter_log_events_pages_end_without_a_token() -> None:
    events = list(range(12))
    seen, token, calls = [], None, 0
    while True:
        page, token = filter_page(events, "g", token, None, True)
        calls += 1
        seen += page
        if token is None:
            break
    assert seen == events and calls == 6  # empty, 5, empty, 5, empty, 2
    assert filter_page(events, "g", None, 10, False) == (events[:10], "g@l")
