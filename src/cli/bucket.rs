//! `ssefs bucket ...`: buckets, their default encryption rule (the OSS
//! PutBucketEncryption family) and their chunk size.

use clap::Subcommand;

use super::{out, GlobalArgs};
use crate::error::Result;
use crate::format::ChunkSize;
use crate::oss::{BucketName, SseConfig};
use crate::principal::Principal;

#[derive(Subcommand, Debug)]
pub enum BucketCmd {
    /// Create a bucket (3-63 lowercase letters, digits and hyphens).
    Create {
        name: String,
        /// Chunk size of its objects in bytes: 4096 (small random I/O),
        /// 16384 (the default) or 65536 (large sequential objects)
        #[arg(long, value_name = "BYTES")]
        chunk_size: Option<String>,
    },
    /// List buckets.
    List,
    /// Delete an empty bucket.
    Delete { name: String },
    /// The bucket's default encryption rule.
    #[command(subcommand)]
    Encryption(EncryptionCmd),
    /// The chunk size of the bucket's objects (an ssefs extension).
    #[command(subcommand)]
    ChunkSize(ChunkSizeCmd),
}

#[derive(Subcommand, Debug)]
pub enum ChunkSizeCmd {
    /// Set it: 4096, 16384 or 65536 bytes. Only while the bucket is empty
    /// (fails with BucketNotEmpty otherwise).
    Put { name: String, bytes: String },
    /// Print it in bytes.
    Get { name: String },
}

#[derive(Subcommand, Debug)]
pub enum EncryptionCmd {
    /// PutBucketEncryption: set the default encryption rule.
    Put {
        name: String,
        /// AES256, SM4 or KMS
        #[arg(long)]
        algorithm: String,
        /// CMK id or alias (KMS only; empty or absent: the default managed key)
        #[arg(long)]
        kms_key_id: Option<String>,
        /// SM4 (KMS only)
        #[arg(long)]
        kms_data_encryption: Option<String>,
    },
    /// GetBucketEncryption: print the rule (fails with NoSuchServerSideEncryptionRule if none).
    Get { name: String },
    /// DeleteBucketEncryption: remove the rule; existing objects are untouched.
    Delete { name: String },
}

pub(super) fn run(g: &GlobalArgs, cmd: BucketCmd) -> Result<()> {
    let e = g.open_engine()?;
    let p = Principal::current();
    match cmd {
        BucketCmd::Create { name, chunk_size } => {
            // Validate everything before touching anything.
            let b = BucketName::parse(&name)?;
            let chunk = chunk_size
                .map(|c| ChunkSize::parse(c.as_bytes()).map_err(|e| e.resource(b.as_str())))
                .transpose()?;
            e.create_bucket(&b)?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            // A new bucket is empty, so this only fails on the disk; the
            // bucket is then removed again rather than left half made.
            e.put_bucket_chunk_size(&p, &b, chunk).inspect_err(|_| {
                let _ = e.delete_bucket(&b);
            })
        }
        BucketCmd::ChunkSize(ChunkSizeCmd::Put { name, bytes }) => {
            let b = BucketName::parse(&name)?;
            let chunk = ChunkSize::parse(bytes.as_bytes()).map_err(|e| e.resource(b.as_str()))?;
            e.put_bucket_chunk_size(&p, &b, chunk)
        }
        BucketCmd::ChunkSize(ChunkSizeCmd::Get { name }) => out(&format!(
            "{}\n",
            e.bucket_chunk_size(&BucketName::parse(&name)?)?
        )),
        BucketCmd::List => {
            let list: String = e.list_buckets()?.iter().map(|b| format!("{b}\n")).collect();
            out(&list)
        }
        BucketCmd::Delete { name } => e.delete_bucket(&BucketName::parse(&name)?),
        BucketCmd::Encryption(EncryptionCmd::Put {
            name,
            algorithm,
            kms_key_id,
            kms_data_encryption,
        }) => {
            let b = BucketName::parse(&name)?;
            let rule = SseConfig::bucket_rule(
                &algorithm,
                kms_key_id.as_deref(),
                kms_data_encryption.as_deref(),
            )
            .map_err(|e| e.resource(b.as_str()))?;
            e.put_bucket_encryption(&p, &b, &rule)
        }
        BucketCmd::Encryption(EncryptionCmd::Get { name }) => {
            let rule = e.get_bucket_encryption(&p, &BucketName::parse(&name)?)?;
            out(&rule.describe_rule())
        }
        BucketCmd::Encryption(EncryptionCmd::Delete { name }) => {
            e.delete_bucket_encryption(&p, &BucketName::parse(&name)?)
        }
    }
}
