"""Drives a running Nimbus S3 endpoint with boto3, the real AWS SDK for Python.

Run by tests/s3.rs with NIMBUS_S3_ENDPOINT, NIMBUS_S3_ACCESS_KEY and NIMBUS_S3_SECRET_KEY set.
Each step asserts; a failure exits non-zero with the step's name. The last line on stdout is a
JSON object with presigned URLs for the Rust side to fetch with curl.
"""

import hashlib
import io
import json
import os
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

MIB = 1024 * 1024

ENDPOINT = os.environ["NIMBUS_S3_ENDPOINT"]
ACCESS_KEY = os.environ["NIMBUS_S3_ACCESS_KEY"]
SECRET_KEY = os.environ["NIMBUS_S3_SECRET_KEY"]


def client(access_key=ACCESS_KEY, secret_key=SECRET_KEY):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


s3 = client()


def step(name):
    print(f"step: {name}", file=sys.stderr, flush=True)


def expect_error(code, status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got_code = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (got_code, got_status) == (code, status), f"expected {code}/{status}, got {got_code}/{got_status}: {e}"
        return
    raise AssertionError(f"expected {code}/{status}, but the call succeeded")


def md5(data):
    return hashlib.md5(data).hexdigest()


def keys_of(listing):
    return [o["Key"] for o in listing.get("Contents", [])]


def prefixes_of(listing):
    return [p["Prefix"] for p in listing.get("CommonPrefixes", [])]


step("buckets: create, list, head")
s3.create_bucket(Bucket="photos")
s3.create_bucket(Bucket="docs")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert names == ["docs", "photos"], names
s3.head_bucket(Bucket="photos")
expect_error("404", 404, s3.head_bucket, Bucket="nothing-here")
expect_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket="photos")
expect_error("InvalidBucketName", 400, s3.create_bucket, Bucket="Bad_Name")

step("put, get, head")
body = b"hello world"
put = s3.put_object(Bucket="photos", Key="hello.txt", Body=body, ContentType="text/plain", Metadata={"owner": "ann"})
assert put["ETag"] == f'"{md5(body)}"', put["ETag"]
got = s3.get_object(Bucket="photos", Key="hello.txt")
assert got["Body"].read() == body
assert got["ContentType"] == "text/plain", got["ContentType"]
assert got["Metadata"] == {"owner": "ann"}, got["Metadata"]
assert got["ETag"] == f'"{md5(body)}"'
head = s3.head_object(Bucket="photos", Key="hello.txt")
assert head["ContentLength"] == len(body), head
assert head["Metadata"] == {"owner": "ann"}, head["Metadata"]
expect_error("NoSuchKey", 404, s3.get_object, Bucket="photos", Key="missing")
expect_error("NoSuchBucket", 404, s3.put_object, Bucket="nothing-here", Key="k", Body=b"x")

step("overwrite replaces the object")
s3.put_object(Bucket="photos", Key="hello.txt", Body=b"hello again")
assert s3.get_object(Bucket="photos", Key="hello.txt")["Body"].read() == b"hello again"

step("awkward keys round-trip and stay inside the bucket")
awkward = ["dir/sub/ü ber+%.txt", "../escape", "a//double", "folder/", "..", "x?y=z&w#frag"]
for key in awkward:
    s3.put_object(Bucket="docs", Key=key, Body=key.encode())
for key in awkward:
    assert s3.get_object(Bucket="docs", Key=key)["Body"].read() == key.encode(), key
assert sorted(keys_of(s3.list_objects_v2(Bucket="docs"))) == sorted(awkward)
for key in awkward:
    s3.delete_object(Bucket="docs", Key=key)
assert keys_of(s3.list_objects_v2(Bucket="docs")) == []

step("list v2: prefix, delimiter, pages")
tree = ["a/1.txt", "a/2.txt", "a/b/3.txt", "a/b/4.txt", "c.txt", "d/5.txt"]
for key in tree:
    s3.put_object(Bucket="docs", Key=key, Body=b"x" * 3)
listing = s3.list_objects_v2(Bucket="docs", Prefix="a/", Delimiter="/")
assert keys_of(listing) == ["a/1.txt", "a/2.txt"], listing
assert prefixes_of(listing) == ["a/b/"], listing
assert listing["Contents"][0]["Size"] == 3
top = s3.list_objects_v2(Bucket="docs", Delimiter="/")
assert keys_of(top) == ["c.txt"] and prefixes_of(top) == ["a/", "d/"], top
first = s3.list_objects_v2(Bucket="docs", MaxKeys=4)
assert first["IsTruncated"] and first["KeyCount"] == 4, first
second = s3.list_objects_v2(Bucket="docs", MaxKeys=4, ContinuationToken=first["NextContinuationToken"])
assert not second["IsTruncated"], second
assert keys_of(first) + keys_of(second) == tree
paged = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="docs", PaginationConfig={"PageSize": 2}):
    paged += keys_of(page)
assert paged == tree, paged
v1 = s3.list_objects(Bucket="docs", Prefix="a/b/")
assert keys_of(v1) == ["a/b/3.txt", "a/b/4.txt"], v1

step("copy and batch delete")
s3.copy_object(Bucket="docs", Key="copy/c.txt", CopySource={"Bucket": "docs", "Key": "c.txt"})
assert s3.get_object(Bucket="docs", Key="copy/c.txt")["Body"].read() == b"xxx"
deleted = s3.delete_objects(Bucket="docs", Delete={"Objects": [{"Key": k} for k in tree + ["copy/c.txt"]]})
assert sorted(d["Key"] for d in deleted["Deleted"]) == sorted(tree + ["copy/c.txt"]), deleted
assert keys_of(s3.list_objects_v2(Bucket="docs")) == []

step("multipart upload: 3 parts, 5 MiB + 5 MiB + 1 KiB")
parts_data = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"c" * 1024]
upload = s3.create_multipart_upload(Bucket="photos", Key="big/file.bin", ContentType="application/octet-stream")
upload_id = upload["UploadId"]
parts = []
for number, data in enumerate(parts_data, start=1):
    part = s3.upload_part(Bucket="photos", Key="big/file.bin", UploadId=upload_id, PartNumber=number, Body=data)
    assert part["ETag"] == f'"{md5(data)}"', part
    parts.append({"PartNumber": number, "ETag": part["ETag"]})
done = s3.complete_multipart_upload(
    Bucket="photos", Key="big/file.bin", UploadId=upload_id, MultipartUpload={"Parts": parts}
)
expected_etag = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + "-3"
assert done["ETag"] == f'"{expected_etag}"', done
whole = s3.get_object(Bucket="photos", Key="big/file.bin")
assert whole["ContentLength"] == 10 * MIB + 1024
assert md5(whole["Body"].read()) == md5(b"".join(parts_data))
expect_error("NoSuchUpload", 404, s3.abort_multipart_upload, Bucket="photos", Key="big/file.bin", UploadId=upload_id)

step("multipart: a small part that is not last is refused")
small = s3.create_multipart_upload(Bucket="photos", Key="small.bin")["UploadId"]
p1 = s3.upload_part(Bucket="photos", Key="small.bin", UploadId=small, PartNumber=1, Body=b"tiny")
p2 = s3.upload_part(Bucket="photos", Key="small.bin", UploadId=small, PartNumber=2, Body=b"tiny")
expect_error(
    "EntityTooSmall", 400, s3.complete_multipart_upload, Bucket="photos", Key="small.bin", UploadId=small,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]},
)

step("multipart: abort")
s3.abort_multipart_upload(Bucket="photos", Key="small.bin", UploadId=small)
expect_error(
    "NoSuchUpload", 404, s3.upload_part, Bucket="photos", Key="small.bin", UploadId=small, PartNumber=1, Body=b"x"
)
expect_error(
    "NoSuchUpload", 404, s3.upload_part, Bucket="photos", Key="small.bin", UploadId="../../../etc", PartNumber=1,
    Body=b"x",
)

step("multipart through the transfer manager (upload_fileobj, 11 MiB)")
managed = os.urandom(11 * MIB)
s3.upload_fileobj(
    io.BytesIO(managed), "photos", "managed.bin",
    Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, use_threads=False),
)
managed_head = s3.head_object(Bucket="photos", Key="managed.bin")
assert managed_head["ETag"].endswith('-3"'), managed_head["ETag"]
out = io.BytesIO()
s3.download_fileobj("photos", "managed.bin", out, Config=TransferConfig(use_threads=False))
assert out.getvalue() == managed

step("ranged GET")
ranged = s3.get_object(Bucket="photos", Key="big/file.bin", Range=f"bytes={5 * MIB - 2}-{5 * MIB + 1}")
assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
assert ranged["Body"].read() == b"aabb"
assert ranged["ContentRange"] == f"bytes {5 * MIB - 2}-{5 * MIB + 1}/{10 * MIB + 1024}", ranged["ContentRange"]
suffix = s3.get_object(Bucket="photos", Key="big/file.bin", Range="bytes=-3")
assert suffix["Body"].read() == b"ccc"
expect_error("InvalidRange", 416, s3.get_object, Bucket="photos", Key="hello.txt", Range="bytes=100-200")

step("bad credentials are refused with 403")
expect_error("SignatureDoesNotMatch", 403, client(secret_key="wrong-secret").list_buckets)
expect_error("InvalidAccessKeyId", 403, client(access_key="AKIDUNKNOWN").list_buckets)
expect_error(
    "SignatureDoesNotMatch", 403, client(secret_key="wrong-secret").put_object, Bucket="photos", Key="evil",
    Body=b"x",
)
expect_error("404", 404, s3.head_object, Bucket="photos", Key="evil")  # the refused put stored nothing

step("delete and bucket rules")
s3.delete_object(Bucket="photos", Key="hello.txt")
expect_error("404", 404, s3.head_object, Bucket="photos", Key="hello.txt")
s3.delete_object(Bucket="photos", Key="hello.txt")  # deleting twice is fine in S3
s3.delete_bucket(Bucket="docs")
expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket="photos")
assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["photos"]

step("presign")
s3.put_object(Bucket="photos", Key="shared/report.txt", Body=b"hello presigned")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "shared/report.txt"}, ExpiresIn=300)
signature = url.split("X-Amz-Signature=")[1].split("&")[0]
bad_url = url.replace(signature, signature[::-1])  # same length and alphabet, wrong value
other_key_url = url.replace("shared/report.txt", "big/file.bin")

print(json.dumps({"presigned": url, "presigned_bad": bad_url, "presigned_other_key": other_key_url}))
