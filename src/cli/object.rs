//! `ssefs object ...`: PutObject, GetObject, HeadObject and CopyObject,
//! with the x-oss-server-side-encryption* headers as options.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{out, GlobalArgs};
use crate::error::{Error, IoContext, Result};
use crate::oss::{split_object_path, SseConfig};
use crate::principal::Principal;

#[derive(Args, Debug, Clone)]
pub struct SseArgs {
    /// x-oss-server-side-encryption: AES256, SM4 or KMS
    #[arg(long)]
    pub sse: Option<String>,
    /// x-oss-server-side-encryption-key-id: CMK id or alias (KMS only)
    #[arg(long)]
    pub sse_key_id: Option<String>,
    /// x-oss-server-side-data-encryption: SM4 (KMS only)
    #[arg(long)]
    pub sse_data_encryption: Option<String>,
}

impl SseArgs {
    fn parse(&self) -> Result<Option<SseConfig>> {
        SseConfig::object_headers(
            self.sse.as_deref(),
            self.sse_key_id.as_deref(),
            self.sse_data_encryption.as_deref(),
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum ObjectCmd {
    /// PutObject: upload FILE ("-" for stdin) as BUCKET/KEY.
    Put {
        path: String,
        file: PathBuf,
        #[command(flatten)]
        sse: SseArgs,
    },
    /// GetObject: write BUCKET/KEY to FILE, or to stdout.
    Get { path: String, file: Option<PathBuf> },
    /// HeadObject: print size and encryption headers.
    Head { path: String },
    /// CopyObject: SRC and DST are BUCKET/KEY; SRC = DST re-encrypts in place.
    Copy {
        src: String,
        dst: String,
        #[command(flatten)]
        sse: SseArgs,
    },
}

pub(super) fn run(g: &GlobalArgs, cmd: ObjectCmd) -> Result<()> {
    let p = Principal::current();
    match cmd {
        ObjectCmd::Put { path, file, sse } => {
            // Validate everything before touching anything.
            let (b, k) = split_object_path(&path)?;
            let over = sse.parse().map_err(|e| e.resource(&path))?;
            let e = g.open_engine()?;
            let info = if file.as_os_str() == "-" {
                e.put_object(&p, &b, &k, &mut io::stdin().lock(), over.as_ref())?
            } else {
                let mut f = File::open(&file).ctx(file.display())?;
                e.put_object(&p, &b, &k, &mut f, over.as_ref())?
            };
            out(&info.header_lines())
        }
        ObjectCmd::Get { path, file } => {
            let (b, k) = split_object_path(&path)?;
            let e = g.open_engine()?;
            match file {
                None => e
                    .get_object(&p, &b, &k, &mut io::stdout().lock())
                    .map(|_| ()),
                Some(f) => {
                    // Into a temp file beside the target, renamed when
                    // complete: a failed read leaves no partial file.
                    let tmp = f.with_extension("ssefs-partial");
                    let res = (|| {
                        let mut w = io::BufWriter::new(File::create(&tmp).ctx(tmp.display())?);
                        e.get_object(&p, &b, &k, &mut w)?;
                        w.into_inner()
                            .map_err(|e| Error::io(tmp.display(), e.into_error()))?
                            .sync_all()
                            .ctx(tmp.display())?;
                        std::fs::rename(&tmp, &f).ctx(f.display())
                    })();
                    if res.is_err() {
                        let _ = std::fs::remove_file(&tmp);
                    }
                    res
                }
            }
        }
        ObjectCmd::Head { path } => {
            let (b, k) = split_object_path(&path)?;
            out(&g.open_engine()?.head_object(&b, &k)?.header_lines())
        }
        ObjectCmd::Copy { src, dst, sse } => {
            let (sb, sk) = split_object_path(&src)?;
            let (db, dk) = split_object_path(&dst)?;
            let over = sse.parse().map_err(|e| e.resource(&dst))?;
            let info = g
                .open_engine()?
                .copy_object(&p, (&sb, &sk), (&db, &dk), over.as_ref())?;
            out(&info.header_lines())
        }
    }
}
