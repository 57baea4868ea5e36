//! The S3 protocol side: s3s parses, authenticates and routes each request, and this adapter
//! turns the typed inputs into [`Storage`] calls and the results back into S3 outputs.

use std::io::SeekFrom;

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, Bucket, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput,
    CopyObjectResult, CopySource, CreateBucketInput, CreateBucketOutput,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput, DeleteBucketOutput,
    DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject,
    ETag, EncodingType, Error as S3ErrorEntry, GetBucketLocationInput, GetBucketLocationOutput,
    GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput,
    HeadObjectOutput, ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput,
    ListObjectsV2Input, ListObjectsV2Output, Metadata, MetadataDirective, Object,
    ObjectStorageClass, PutObjectInput, PutObjectOutput, StreamingBlob, Timestamp, UploadPartInput,
    UploadPartOutput,
};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use tracing::error;

use crate::error::{ErrorKind, StorageError};
use crate::layout::KeyError;
use crate::listing::{self, ListQuery, Page, MAX_KEYS};
use crate::multipart::CompleteError;
use crate::object::{time_from_unix_ms, ObjectMeta, ObjectRecord};
use crate::store::Storage;

/// Read size when streaming an object to a client.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct S3Adapter {
    storage: Storage,
}

impl S3Adapter {
    pub(crate) fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// The shared part of ListObjects v1 and v2.
    async fn list(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        after: Option<String>,
        max_keys: Option<i32>,
        url_encoded: bool,
    ) -> S3Result<(Page, Vec<Object>, Vec<CommonPrefix>)> {
        let query = ListQuery {
            prefix: prefix.unwrap_or_default().to_owned(),
            delimiter: delimiter.map(str::to_owned),
            after,
            max_keys: max_keys.map_or(MAX_KEYS, |n| {
                usize::try_from(n).unwrap_or_default().min(MAX_KEYS)
            }),
        };
        let (page, records) = self
            .storage
            .list_objects(bucket, &query)
            .await
            .map_err(to_s3)?;
        let encode = |s: &str| {
            if url_encoded {
                listing::encode_url(s)
            } else {
                s.to_owned()
            }
        };
        let objects = records
            .iter()
            .map(|r| Object {
                key: Some(encode(&r.key)),
                size: Some(size_i64(r.size)),
                e_tag: Some(ETag::Strong(r.etag.clone())),
                last_modified: Some(timestamp(r)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(encode(p)),
            })
            .collect();
        Ok((page, objects, prefixes))
    }
}

#[async_trait::async_trait]
impl S3 for S3Adapter {
    // --- buckets ---

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        self.storage.create_bucket(&bucket).await.map_err(to_s3)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.storage
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.storage.list_buckets().await.map_err(to_s3)?;
        let buckets = buckets
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(Timestamp::from(b.created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    // --- objects ---

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let meta = ObjectMeta {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            user: input.metadata.unwrap_or_default().into_iter().collect(),
        };
        let body = input.body.unwrap_or_else(empty_body);
        let record = self
            .storage
            .put_object(
                &input.bucket,
                &input.key,
                body,
                content_length(input.content_length)?,
                meta,
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(record.etag)),
            size: Some(size_i64(record.size)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (record, mut file) = self
            .storage
            .open_object(&input.bucket, &input.key)
            .await
            .map_err(to_s3)?;
        let (start, length, content_range) = match input.range {
            None => (0, record.size, None),
            Some(range) => {
                let range = range.check(record.size)?;
                let content_range =
                    format!("bytes {}-{}/{}", range.start, range.end - 1, record.size);
                (range.start, range.end - range.start, Some(content_range))
            }
        };
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| internal(&e))?;
        }
        let body = ReaderStream::with_capacity(file.take(length), READ_CHUNK);
        let meta = record.meta.clone();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(size_i64(length)),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(ETag::Strong(record.etag.clone())),
            last_modified: Some(timestamp(&record)),
            content_type: meta.content_type,
            content_encoding: meta.content_encoding,
            content_disposition: meta.content_disposition,
            content_language: meta.content_language,
            cache_control: meta.cache_control,
            metadata: user_metadata(&record),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let record = self
            .storage
            .head_object(&input.bucket, &input.key)
            .await
            .map_err(to_s3)?;
        let meta = record.meta.clone();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size_i64(record.size)),
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(ETag::Strong(record.etag.clone())),
            last_modified: Some(timestamp(&record)),
            content_type: meta.content_type,
            content_encoding: meta.content_encoding,
            content_disposition: meta.content_disposition,
            content_language: meta.content_language,
            cache_control: meta.cache_control,
            metadata: user_metadata(&record),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.storage
            .delete_object(&input.bucket, &input.key)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            match self.storage.delete_object(&input.bucket, &object.key).await {
                Ok(_) if quiet => {}
                Ok(_) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                // The whole request fails only if the bucket is gone.
                Err(e @ StorageError::NoSuchBucket(_)) => return Err(to_s3(e)),
                Err(e) => {
                    let e = to_s3(e);
                    errors.push(S3ErrorEntry {
                        code: Some(e.code().as_str().to_owned()),
                        key: Some(object.key),
                        message: e.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "only bucket/key copy sources are supported"
            ));
        };
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let meta = replace.then(|| ObjectMeta {
            content_type: input.content_type.clone(),
            content_encoding: input.content_encoding.clone(),
            content_disposition: input.content_disposition.clone(),
            content_language: input.content_language.clone(),
            cache_control: input.cache_control.clone(),
            user: input
                .metadata
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        });
        let record = self
            .storage
            .copy_object((src_bucket, src_key), &input.bucket, &input.key, meta)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(record.etag.clone())),
                last_modified: Some(timestamp(&record)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let after = match input.continuation_token.as_deref() {
            Some(token) => Some(
                listing::decode_token(token).ok_or_else(|| to_s3(StorageError::InvalidToken))?,
            ),
            None => input.start_after.clone(),
        };
        let url_encoded = is_url_encoding(input.encoding_type.as_ref());
        let (page, objects, prefixes) = self
            .list(
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                after,
                input.max_keys,
                url_encoded,
            )
            .await?;
        let key_count = objects.len() + prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url_encoded, input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(|d| encode_if(url_encoded, d)),
            start_after: input.start_after.map(|s| encode_if(url_encoded, s)),
            max_keys: Some(input.max_keys.unwrap_or(1000)),
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            is_truncated: Some(page.next_after.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next_after.as_deref().map(listing::encode_token),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url_encoded = is_url_encoding(input.encoding_type.as_ref());
        let (page, objects, prefixes) = self
            .list(
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                input.marker.clone(),
                input.max_keys,
                url_encoded,
            )
            .await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url_encoded, input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(|d| encode_if(url_encoded, d)),
            marker: input.marker.map(|m| encode_if(url_encoded, m)),
            max_keys: Some(input.max_keys.unwrap_or(1000)),
            is_truncated: Some(page.next_after.is_some()),
            next_marker: page.next_after.map(|m| encode_if(url_encoded, m)),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    // --- multipart uploads ---

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let meta = ObjectMeta {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            user: input.metadata.unwrap_or_default().into_iter().collect(),
        };
        let upload_id = self
            .storage
            .create_upload(&input.bucket, &input.key, meta)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let body = input.body.unwrap_or_else(empty_body);
        let etag = self
            .storage
            .upload_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                body,
                content_length(input.content_length)?,
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let parts = input
            .multipart_upload
            .and_then(|u| u.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| match (p.part_number, p.e_tag) {
                (Some(number), Some(etag)) => Ok((number, etag.into_value())),
                (number, _) => Err(to_s3(StorageError::Complete(CompleteError::InvalidPart(
                    number.unwrap_or_default(),
                )))),
            })
            .collect::<S3Result<Vec<_>>>()?;
        let record = self
            .storage
            .complete_upload(&input.bucket, &input.key, &input.upload_id, &parts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(record.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.storage
            .abort_upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

// === conversions ===

/// The S3 error for a storage error; internal ones are logged here, once, with their cause.
fn to_s3(e: StorageError) -> S3Error {
    use S3ErrorCode as C;
    let code = match &e {
        StorageError::InvalidBucketName { .. } => C::InvalidBucketName,
        StorageError::InvalidKey(KeyError::TooLong(_)) => C::KeyTooLongError,
        StorageError::InvalidKey(_) | StorageError::InvalidPartNumber(_) => C::InvalidArgument,
        StorageError::BucketExists(_) => C::BucketAlreadyOwnedByYou,
        StorageError::NoSuchBucket(_) => C::NoSuchBucket,
        StorageError::BucketNotEmpty(_) => C::BucketNotEmpty,
        StorageError::NoSuchKey { .. } => C::NoSuchKey,
        StorageError::NoSuchUpload(_) => C::NoSuchUpload,
        StorageError::Complete(CompleteError::NoParts) => C::MalformedXML,
        StorageError::Complete(CompleteError::InvalidPartOrder) => C::InvalidPartOrder,
        StorageError::Complete(CompleteError::InvalidPart(_)) => C::InvalidPart,
        StorageError::Complete(CompleteError::EntityTooSmall(_)) => C::EntityTooSmall,
        StorageError::IncompleteBody { .. } => C::IncompleteBody,
        StorageError::InvalidToken => C::InvalidArgument,
        StorageError::Body(_) => {
            // A failed chunk signature surfaces as the body's error: pass it on as is.
            let StorageError::Body(source) = e else {
                return s3_error!(InternalError);
            };
            return match source.downcast::<S3Error>() {
                Ok(s3) => *s3,
                Err(other) => s3_error!(IncompleteBody, "reading the request body failed: {other}"),
            };
        }
        StorageError::CorruptMetadata { .. } | StorageError::Io { .. } => C::InternalError,
    };
    if e.kind() == ErrorKind::Internal {
        error!(error = %e, "Storage failed.");
        return S3Error::new(code);
    }
    S3Error::with_message(code, e.to_string())
}

fn internal(e: &dyn std::fmt::Display) -> S3Error {
    error!(error = %e, "Storage failed.");
    s3_error!(InternalError)
}

fn content_length(length: Option<i64>) -> S3Result<Option<u64>> {
    length
        .map(|n| {
            u64::try_from(n).map_err(|_| s3_error!(InvalidArgument, "negative Content-Length"))
        })
        .transpose()
}

fn empty_body() -> StreamingBlob {
    StreamingBlob::wrap(futures_util::stream::empty::<
        Result<bytes::Bytes, std::io::Error>,
    >())
}

fn size_i64(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn timestamp(record: &ObjectRecord) -> Timestamp {
    Timestamp::from(time_from_unix_ms(record.last_modified_unix_ms))
}

fn user_metadata(record: &ObjectRecord) -> Option<Metadata> {
    (!record.meta.user.is_empty()).then(|| record.meta.user.clone().into_iter().collect())
}

fn is_url_encoding(encoding: Option<&EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_if(url_encoded: bool, s: String) -> String {
    if url_encoded {
        listing::encode_url(&s)
    } else {
        s
    }
}
