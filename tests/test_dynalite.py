"""The local DynamoDB of `make up` and `make demo`: dynalite as local/dynalite.js runs it (each expression
parsed once per shape), against stock dynalite; its tables on disk outliving the process."""

from __future__ import annotations

import socket
import struct

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local.storage import DynaliteServer, create_table

pytestmark = pytest.mark.skipif(DynaliteServer.missing() is not None, reason=str(DynaliteServer.missing()))

TABLE = "campaigns"


def client_of(server: DynaliteServer):
    return boto3.client("dynamodb", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="local",
                        aws_secret_access_key="local", config=Config(retries={"total_max_attempts": 1}))


def key(seq: int) -> dict:
    return {"PK": {"S": "CAMPAIGN#c#SHARD#0"}, "SK": {"S": f"R#{seq:09d}"}}


CLAIM = "((#0 = :0 AND (attribute_not_exists (#1) OR #1 <= :1)) OR (#0 = :2 AND #2 = :3))"
CLAIM_NAMES = {"#0": "status", "#1": "not_before", "#2": "claimed_by"}


def claim(seq: int, owner: str, now: str, status_type: str = "S") -> tuple[str, dict]:
    return "UpdateItem", {
        "TableName": TABLE, "Key": key(seq),
        "UpdateExpression": "SET #0 = :4, #2 = :5, #3 = :6",
        "ConditionExpression": CLAIM,
        "ExpressionAttributeNames": {**CLAIM_NAMES, "#3": "claimed_at"},
        "ExpressionAttributeValues": {":0": {status_type: "pending" if status_type == "S" else "1"},
                                      ":1": {"N": now}, ":2": {"S": "sending"}, ":3": {"S": owner},
                                      ":4": {"S": "sending"}, ":5": {"S": owner}, ":6": {"N": now}},
    }


# Calls in order, each sent to both servers: the product's expressions with new values each time (the
# kept parse reused), the same shapes with other value types, the errors dynalite reports, and the
# reads the sender and recovery make.
CALLS = [
    *[("PutItem", {"TableName": TABLE, "Item": {**key(n), "status": {"S": "pending"}, "n": {"N": str(n)},
                                                "tags": {"SS": ["a", "b"]}}}) for n in range(6)],
    claim(0, "batch-1", "100"), claim(1, "batch-1", "101"), claim(0, "batch-2", "102"),  # the last one refused
    claim(0, "batch-1", "103"),  # its own retry wins
    claim(2, "batch-1", "104", status_type="N"),  # same shape, another type: refused for another reason
    ("UpdateItem", {"TableName": TABLE, "Key": key(3), "UpdateExpression": "ADD #0 :0 DELETE #1 :1",
                    "ExpressionAttributeNames": {"#0": "n", "#1": "tags"},
                    "ExpressionAttributeValues": {":0": {"N": "5"}, ":1": {"SS": ["a"]}}, "ReturnValues": "ALL_OLD"}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(3), "UpdateExpression": "ADD #0 :0 DELETE #1 :1",
                    "ExpressionAttributeNames": {"#0": "n", "#1": "tags"},
                    "ExpressionAttributeValues": {":0": {"N": "-2"}, ":1": {"SS": ["b"]}}, "ReturnValues": "ALL_NEW"}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(3), "UpdateExpression": "ADD #0 :0",  # ADD of a string
                    "ExpressionAttributeNames": {"#0": "n"}, "ExpressionAttributeValues": {":0": {"S": "x"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(4), "UpdateExpression": "SET #0 = :0",  # a value unused
                    "ExpressionAttributeNames": {"#0": "status"},
                    "ExpressionAttributeValues": {":0": {"S": "x"}, ":9": {"S": "y"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(4), "UpdateExpression": "SET #0 = :0",  # the same, all used
                    "ExpressionAttributeNames": {"#0": "status"}, "ExpressionAttributeValues": {":0": {"S": "x"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(4), "UpdateExpression": "SET #0 = :0",  # a value undefined
                    "ExpressionAttributeNames": {"#0": "status"}, "ExpressionAttributeValues": {":1": {"S": "x"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(4), "UpdateExpression": "SET status = :0",  # reserved word
                    "ExpressionAttributeValues": {":0": {"S": "x"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(5), "UpdateExpression": "SET #0 = :0",
                    "ConditionExpression": "attribute_type (#0, :1)",  # a value read for more than its type
                    "ExpressionAttributeNames": {"#0": "status"},
                    "ExpressionAttributeValues": {":0": {"S": "x"}, ":1": {"S": "S"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(5), "UpdateExpression": "SET #0 = :0",
                    "ConditionExpression": "attribute_type (#0, :1)",
                    "ExpressionAttributeNames": {"#0": "status"},
                    "ExpressionAttributeValues": {":0": {"S": "x"}, ":1": {"S": "N"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(5), "UpdateExpression": "SET #0 = :0",
                    "ConditionExpression": "attribute_type (#0, :1)",
                    "ExpressionAttributeNames": {"#0": "status"},
                    "ExpressionAttributeValues": {":0": {"S": "x"}, ":1": {"S": "XX"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(5), "UpdateExpression": "SET #0 = :0",
                    "ConditionExpression": "#1 BETWEEN :1 AND :2",  # BETWEEN compares its bounds' values
                    "ExpressionAttributeNames": {"#0": "status", "#1": "n"},
                    "ExpressionAttributeValues": {":0": {"S": "y"}, ":1": {"N": "1"}, ":2": {"N": "9"}}}),
    ("UpdateItem", {"TableName": TABLE, "Key": key(5), "UpdateExpression": "SET #0 = :0",
                    "ConditionExpression": "#1 BETWEEN :1 AND :2",
                    "ExpressionAttributeNames": {"#0": "status", "#1": "n"},
                    "ExpressionAttributeValues": {":0": {"S": "y"}, ":1": {"N": "9"}, ":2": {"N": "1"}}}),
    ("Query", {"TableName": TABLE, "KeyConditionExpression": "#0 = :0 AND #1 BETWEEN :1 AND :2",
               "ExpressionAttributeNames": {"#0": "PK", "#1": "SK"}, "ConsistentRead": True, "Limit": 4,
               "ExpressionAttributeValues": {":0": key(0)["PK"], ":1": key(1)["SK"], ":2": key(999)["SK"]}}),
    ("Query", {"TableName": TABLE, "KeyConditionExpression": "#0 = :0 AND begins_with (#1, :1)",
               "ProjectionExpression": "#1, #2", "ExpressionAttributeNames": {"#0": "PK", "#1": "SK", "#2": "status"},
               "ExpressionAttributeValues": {":0": key(0)["PK"], ":1": {"S": "R#"}}}),
    ("Query", {"TableName": TABLE, "KeyConditionExpression": "#0 = :0 AND begins_with (#1, :1)",
               "ProjectionExpression": "#1, #2", "ExpressionAttributeNames": {"#0": "PK", "#1": "SK", "#2": "n"},
               "ExpressionAttributeValues": {":0": key(0)["PK"], ":1": {"S": "R#00000000"}}}),
    ("GetItem", {"TableName": TABLE, "Key": key(0), "ConsistentRead": True}),
    ("GetItem", {"TableName": TABLE, "Key": key(3), "ConsistentRead": True}),
]


def answers(server: DynaliteServer) -> list:
    client = client_of(server)
    create_table(server.url, TABLE)
    out = []
    for operation, params in CALLS:
        method = getattr(client, "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_"))
        try:
            answer = method(**params)
            answer.pop("ResponseMetadata")
            out.append(answer)
        except ClientError as error:
            out.append((error.response["Error"]["Code"], error.response["Error"]["Message"]))
    return out


def test_answers_errors_included_are_those_of_stock_dynalite():
    with DynaliteServer(stock=True) as stock:
        expected = answers(stock)
    with DynaliteServer() as ours:
        got = answers(ours)
    assert [type(answer) for answer in expected].count(tuple) >= 8  # the errors are in the comparison
    for call, want, have in zip(CALLS, expected, got, strict=True):
        assert have == want, call


def test_the_tables_outlive_the_server_in_its_folder(tmp_path):
    with DynaliteServer(data_dir=tmp_path) as first:
        assert create_table(first.url, TABLE, keep_existing=True)
        client_of(first).put_item(TableName=TABLE, Item={**key(1), "status": {"S": "sent"}})
    with DynaliteServer(data_dir=tmp_path) as second:
        assert not create_table(second.url, TABLE, keep_existing=True)  # there already: kept as it is
        assert client_of(second).get_item(TableName=TABLE, Key=key(1))["Item"]["status"] == {"S": "sent"}
        with pytest.raises(ClientError):
            create_table(second.url, TABLE)


def test_a_folder_in_use_by_another_server_is_one_clear_line(tmp_path):
    with DynaliteServer(data_dir=tmp_path), pytest.raises(RuntimeError) as raised:
        DynaliteServer(data_dir=tmp_path).start()
    assert "in use" in str(raised.value) and "\n" not in str(raised.value)


def test_a_client_that_dies_in_the_middle_of_a_request_does_not_take_the_server_down():
    """A SIGKILLed sender resets its connections, maybe halfway through a request's body: stock dynalite
    then exits (its request stream's error is rethrown), and every other client loses the store."""
    with DynaliteServer() as server:
        create_table(server.url, TABLE)
        with socket.create_connection(("127.0.0.1", server.port)) as dying:
            dying.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.0\r\n"
                          b"X-Amz-Target: DynamoDB_20120810.PutItem\r\nContent-Length: 1000\r\n\r\n{\"Tab")
            # closed with a reset, as the kernel closes a killed process's sockets with data unread
            dying.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client_of(server).put_item(TableName=TABLE, Item={**key(1), "status": {"S": "pending"}})
        assert client_of(server).get_item(TableName=TABLE, Key=key(1))["Item"]["status"] == {"S": "pending"}
