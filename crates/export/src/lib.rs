//! Tables of netblame's results for notebooks: each table is a polars `DataFrame`, written as
//! CSV or Parquet with plain column types (integers, floats, strings, booleans) so that pandas
//! and polars load them with no options. This is the only crate that depends on polars; the
//! columns are documented in `docs/tables.md`.

#![deny(unsafe_code)]

use std::error::Error;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use netblame_correlate::{
    Analysis, ConnectTiming, Direction, Exchange, Flow, JoinEnd, JoinSink, PacketRecord, ReadBlame,
    SendTiming, SocketCall, TestRow,
};
use polars::prelude::*;

mod calls;
pub use calls::{connects_frame, exchanges_frame, reads_frame, sends_frame, tests_frame};
/// The table type, for callers that hold a table between building and writing it.
pub use polars::prelude::DataFrame;

/// One value of a row-oriented record (small tables, JSON output).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    U64(u64),
    I64(Option<i64>),
    Str(String),
    Bool(bool),
}

/// A row: column names and values, in column order.
pub type Record = Vec<(&'static str, Cell)>;

/// One row per flow and direction (see docs/tables.md, `flows`).
pub fn flow_records(analysis: &Analysis) -> Vec<Record> {
    let mut rows = Vec::with_capacity(analysis.flows.len() * 2);
    for flow in &analysis.flows {
        for d in 0..2 {
            rows.push(flow_record(flow, d));
        }
    }
    rows
}

fn flow_record(flow: &Flow, d: usize) -> Record {
    let dir: &Direction = &flow.dirs[d];
    let (src, dst) = (flow.endpoints[d], flow.endpoints[1 - d]);
    let s = &dir.stats;
    let u = Cell::U64;
    vec![
        ("flow_id", u(u64::from(flow.id))),
        ("proto", Cell::Str(flow.protocol.as_str().into())),
        (
            "direction",
            Cell::Str(if d == 0 { "a->b" } else { "b->a" }.into()),
        ),
        ("src_addr", Cell::Str(src.addr.to_string())),
        ("src_port", u(u64::from(src.port))),
        ("dst_addr", Cell::Str(dst.addr.to_string())),
        ("dst_port", u(u64::from(dst.port))),
        ("aligned", Cell::Bool(dir.aligned())),
        ("first_ts_ns", Cell::I64(dir.first_ts_ns)),
        ("last_ts_ns", Cell::I64(dir.last_ts_ns)),
        ("packets", u(s.packets)),
        ("data_packets", u(s.data_packets)),
        ("payload_bytes", u(s.payload_bytes)),
        ("unique_bytes", u(s.unique_bytes)),
        ("retransmitted_packets", u(s.retransmitted_packets)),
        ("retransmitted_bytes", u(s.retransmitted_bytes)),
        ("spurious_retransmissions", u(s.spurious_retransmissions)),
        ("out_of_order_packets", u(s.out_of_order_packets)),
        ("gaps", u(s.gaps)),
        ("gap_bytes", u(s.gap_bytes)),
        ("zero_window_packets", u(s.zero_window_packets)),
        ("zero_window_probes", u(s.zero_window_probes)),
        ("keep_alives", u(s.keep_alives)),
        ("duplicate_acks", u(s.duplicate_acks)),
        ("sack_packets", u(s.sack_packets)),
        ("syn_packets", u(s.syn_packets)),
        ("fin_packets", u(s.fin_packets)),
        ("rst_packets", u(s.rst_packets)),
        ("capture_duplicates", u(s.capture_duplicates)),
        ("handshake_rtt_ns", Cell::I64(flow.handshake_rtt_ns)),
        ("rtt_samples", u(dir.rtt_samples_ns.len() as u64)),
        ("rtt_p50_ns", Cell::I64(dir.rtt_quantile_ns(0.5))),
        ("rtt_p99_ns", Cell::I64(dir.rtt_quantile_ns(0.99))),
    ]
}

/// Builds a DataFrame from records that all have the same columns.
pub fn records_to_frame(
    records: &[Record],
    empty_schema: &[(&'static str, Cell)],
) -> Result<DataFrame, ExportError> {
    let template = records.first().map_or(empty_schema, |r| r.as_slice());
    let mut columns = Vec::with_capacity(template.len());
    for (i, (name, kind)) in template.iter().enumerate() {
        let name: PlSmallStr = (*name).into();
        let col = match kind {
            Cell::U64(_) => Column::new(
                name,
                records
                    .iter()
                    .map(|r| cell_u64(&r[i].1))
                    .collect::<Vec<u64>>(),
            ),
            Cell::I64(_) => Column::new(
                name,
                records
                    .iter()
                    .map(|r| cell_i64(&r[i].1))
                    .collect::<Vec<Option<i64>>>(),
            ),
            Cell::Bool(_) => Column::new(
                name,
                records
                    .iter()
                    .map(|r| r[i].1 == Cell::Bool(true))
                    .collect::<Vec<bool>>(),
            ),
            Cell::Str(_) => Column::new(
                name,
                records
                    .iter()
                    .map(|r| {
                        if let Cell::Str(s) = &r[i].1 {
                            s.as_str()
                        } else {
                            ""
                        }
                    })
                    .collect::<Vec<&str>>(),
            ),
        };
        columns.push(col);
    }
    DataFrame::new(records.len(), columns).map_err(|e| ExportError::Frame {
        table: "records",
        source: e,
    })
}

fn cell_u64(c: &Cell) -> u64 {
    if let Cell::U64(v) = c {
        *v
    } else {
        0
    }
}

fn cell_i64(c: &Cell) -> Option<i64> {
    if let Cell::I64(v) = c {
        *v
    } else {
        None
    }
}

/// The `flows` table.
pub fn flows_frame(analysis: &Analysis) -> Result<DataFrame, ExportError> {
    let empty = flow_record(&empty_flow(), 0);
    records_to_frame(&flow_records(analysis), &empty)
}

fn empty_flow() -> Flow {
    let ep = netblame_correlate::Endpoint {
        addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
        port: 0,
    };
    Flow {
        id: 0,
        protocol: netblame_correlate::Protocol::Tcp,
        endpoints: [ep, ep],
        dirs: Default::default(),
        first_ts_ns: 0,
        last_ts_ns: 0,
        syn_ts_ns: None,
        syn_answered_ts_ns: None,
        syn_ack_ts_ns: None,
        syn_rst_ts_ns: None,
        handshake_rtt_ns: None,
    }
}

/// tcpdump-style flag letters: S F R P U E W and `.` for ACK.
pub fn flag_string(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
        (0x10, '.'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// The `packets` table: one row per TCP/UDP packet, built column by column.
pub fn packets_frame(analysis: &Analysis) -> Result<DataFrame, ExportError> {
    let ends: Vec<FlowEnds> = analysis.flows.iter().map(FlowEnds::new).collect();
    packets_frame_rows(&ends, &analysis.packets)
}

/// What a `packets` row says of its flow, made once a flow rather than once a packet.
struct FlowEnds {
    proto: &'static str,
    addrs: [String; 2],
    ports: [u16; 2],
}

impl FlowEnds {
    fn new(f: &Flow) -> FlowEnds {
        FlowEnds {
            proto: f.protocol.as_str(),
            addrs: f.endpoints.map(|e| e.addr.to_string()),
            ports: f.endpoints.map(|e| e.port),
        }
    }
}

/// The `packets` table of packets `p` of flows `ends` (by flow id - 1).
fn packets_frame_rows(ends: &[FlowEnds], p: &[PacketRecord]) -> Result<DataFrame, ExportError> {
    // Every flag combination's letters, made once rather than once a packet.
    let flag_strings: Vec<String> = (0..=u8::MAX).map(flag_string).collect();
    let flow = |r: &PacketRecord| &ends[r.flow_id as usize - 1];
    // The sender's end (0) or the receiver's (1) of a packet.
    let end = |r: &PacketRecord, sender: bool| {
        let d = usize::from(r.dir);
        if sender {
            d
        } else {
            1 - d
        }
    };
    let addr = |r: &PacketRecord, sender: bool| flow(r).addrs[end(r, sender)].as_str();
    let port = |r: &PacketRecord, sender: bool| u32::from(flow(r).ports[end(r, sender)]);
    let columns = vec![
        Column::new(
            "ts_ns".into(),
            p.iter().map(|r| r.ts_ns).collect::<Vec<i64>>(),
        ),
        Column::new(
            "flow_id".into(),
            p.iter().map(|r| r.flow_id).collect::<Vec<u32>>(),
        ),
        Column::new(
            "proto".into(),
            p.iter().map(|r| flow(r).proto).collect::<Vec<&str>>(),
        ),
        Column::new(
            "direction".into(),
            p.iter()
                .map(|r| if r.dir == 0 { "a->b" } else { "b->a" })
                .collect::<Vec<&str>>(),
        ),
        Column::new(
            "src_addr".into(),
            p.iter().map(|r| addr(r, true)).collect::<Vec<&str>>(),
        ),
        Column::new(
            "src_port".into(),
            p.iter().map(|r| port(r, true)).collect::<Vec<u32>>(),
        ),
        Column::new(
            "dst_addr".into(),
            p.iter().map(|r| addr(r, false)).collect::<Vec<&str>>(),
        ),
        Column::new(
            "dst_port".into(),
            p.iter().map(|r| port(r, false)).collect::<Vec<u32>>(),
        ),
        Column::new(
            "rel_seq".into(),
            p.iter().map(|r| r.rel_seq).collect::<Vec<i64>>(),
        ),
        Column::new(
            "rel_ack".into(),
            p.iter().map(|r| r.rel_ack).collect::<Vec<Option<i64>>>(),
        ),
        Column::new(
            "payload_len".into(),
            p.iter().map(|r| r.payload_len).collect::<Vec<u32>>(),
        ),
        Column::new(
            "flags".into(),
            p.iter()
                .map(|r| flag_strings[usize::from(r.flags)].as_str())
                .collect::<Vec<&str>>(),
        ),
        Column::new(
            "window".into(),
            p.iter().map(|r| r.window).collect::<Vec<u64>>(),
        ),
        Column::new(
            "class".into(),
            p.iter().map(|r| r.class.as_str()).collect::<Vec<&str>>(),
        ),
    ];
    DataFrame::new(p.len(), columns).map_err(|e| ExportError::Frame {
        table: "packets",
        source: e,
    })
}

/// Output format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Parquet,
}

impl TableFormat {
    pub fn extension(self) -> &'static str {
        match self {
            TableFormat::Csv => "csv",
            TableFormat::Parquet => "parquet",
        }
    }
}

/// Where a table goes: a directory, a format, and for a dataset (runs from many machines read
/// as one table) the host every row is tagged with, in a `host` column.
#[derive(Debug, Clone, Copy)]
pub struct TableOutput<'a> {
    pub dir: &'a Path,
    pub format: TableFormat,
    pub host: Option<&'a str>,
}

impl TableOutput<'_> {
    /// `frame` with this output's `host` column, if it has one (`None`: write `frame` as it is).
    fn with_host(&self, frame: &DataFrame) -> Result<Option<DataFrame>, PolarsError> {
        let Some(host) = self.host else {
            return Ok(None);
        };
        let mut f = frame.clone();
        let value = Scalar::new(DataType::String, AnyValue::StringOwned(host.into()));
        f.with_column(Column::new_scalar("host".into(), value, frame.height()))?;
        Ok(Some(f))
    }
}

/// Why a table could not be written.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExportError {
    /// The output directory or file could not be created.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// polars refused to build the table.
    Frame {
        table: &'static str,
        source: PolarsError,
    },
    /// polars failed to write the file.
    Write { path: PathBuf, source: PolarsError },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::Io { path, .. } => write!(f, "cannot write {}", path.display()),
            ExportError::Frame { table, .. } => write!(f, "cannot build the {table} table"),
            ExportError::Write { path, .. } => write!(f, "cannot write table {}", path.display()),
        }
    }
}

impl Error for ExportError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ExportError::Io { source, .. } => Some(source),
            ExportError::Frame { source, .. } | ExportError::Write { source, .. } => Some(source),
        }
    }
}

/// Rows of a table built and written at a time: a large table (reads, sends, exchanges and
/// packets grow with the run) is never whole in memory.
pub const BATCH_ROWS: usize = if cfg!(test) { 3 } else { 1 << 17 };

/// Writes the `flows` table into each of `outputs`.
pub fn write_flows(analysis: &Analysis, outputs: &[TableOutput]) -> Result<(), ExportError> {
    let mut flows = flows_frame(analysis)?;
    for out in outputs {
        write_table(out, "flows", &mut flows)?;
    }
    Ok(())
}

/// The `packets` table, written while the capture is read: rows come in as the analyzer makes
/// them (`Analyzer::drain_packets`) and are built and written [`BATCH_ROWS`] at a time, so the
/// packets of a run are never all in memory.
pub struct PacketTable<'a> {
    writers: TableWriters<'a>,
    /// The flows seen so far, by id - 1.
    ends: Vec<FlowEnds>,
    pending: Vec<PacketRecord>,
    written: bool,
}

impl fmt::Debug for PacketTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<&PathBuf> = self.writers.writers.iter().map(|w| &w.0).collect();
        f.debug_struct("PacketTable")
            .field("files", &paths)
            .field("flows", &self.ends.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<'a> PacketTable<'a> {
    /// Creates `packets` in each of `outputs`.
    pub fn new(outputs: &'a [TableOutput<'a>]) -> Result<PacketTable<'a>, ExportError> {
        let empty = packets_frame_rows(&[], &[])?;
        Ok(PacketTable {
            writers: TableWriters::new(outputs, "packets", &empty)?,
            ends: Vec::new(),
            pending: Vec::with_capacity(BATCH_ROWS),
            written: false,
        })
    }

    /// Adds packets of `flows` (the flows so far: a packet's flow is one of them).
    pub fn add(
        &mut self,
        flows: &[Flow],
        packets: impl IntoIterator<Item = PacketRecord>,
    ) -> Result<(), ExportError> {
        self.ends
            .extend(flows[self.ends.len()..].iter().map(FlowEnds::new));
        for p in packets {
            self.pending.push(p);
            if self.pending.len() == BATCH_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        let frame = packets_frame_rows(&self.ends, &self.pending)?;
        self.pending.clear();
        self.written = true;
        self.writers.write(&frame)
    }

    /// Writes the last rows and closes the files.
    pub fn finish(mut self) -> Result<(), ExportError> {
        if !self.pending.is_empty() || !self.written {
            self.flush()?;
        }
        self.writers.finish()
    }
}

/// A table of the join's results being written as they come, [`BATCH_ROWS`] rows at a time.
struct RowBatches<'o, T> {
    writers: TableWriters<'o>,
    pending: Vec<T>,
    written: bool,
    build: fn(&[SocketCall], &[T]) -> Result<DataFrame, ExportError>,
}

impl<'o, T: Clone> RowBatches<'o, T> {
    fn new(
        outputs: &'o [TableOutput<'o>],
        name: &'static str,
        build: fn(&[SocketCall], &[T]) -> Result<DataFrame, ExportError>,
    ) -> Result<RowBatches<'o, T>, ExportError> {
        Ok(RowBatches {
            writers: TableWriters::new(outputs, name, &build(&[], &[])?)?,
            pending: Vec::new(),
            written: false,
            build,
        })
    }

    fn add(&mut self, calls: &[SocketCall], row: &T) -> Result<(), ExportError> {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(BATCH_ROWS);
        }
        self.pending.push(row.clone());
        if self.pending.len() == BATCH_ROWS {
            self.flush(calls)?;
        }
        Ok(())
    }

    fn flush(&mut self, calls: &[SocketCall]) -> Result<(), ExportError> {
        let frame = (self.build)(calls, &self.pending)?;
        self.pending.clear();
        self.written = true;
        self.writers.write(&frame)
    }

    /// Writes the last rows (an empty table once, for its columns) and closes the files.
    fn finish(mut self, calls: &[SocketCall]) -> Result<(), ExportError> {
        if !self.pending.is_empty() || !self.written {
            self.flush(calls)?;
        }
        self.writers.finish()
    }
}

/// The tables of a run's join (docs/tables.md) but `packets`: `reads`, `sends` and `exchanges`
/// written as the join makes their rows (a `JoinSink`), `connects`, `tests` and `flows` at its
/// end ([`CallTables::finish`]). Memory: a batch of rows per table, whatever the run's length.
pub struct CallTables<'o> {
    outputs: &'o [TableOutput<'o>],
    reads: RowBatches<'o, ReadBlame>,
    sends: RowBatches<'o, SendTiming>,
    exchanges: RowBatches<'o, Exchange>,
    connects: Vec<ConnectTiming>,
    /// The first write that failed: the rows after it are dropped, and `finish` returns it.
    failed: Option<ExportError>,
}

impl fmt::Debug for CallTables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dirs: Vec<&Path> = self.outputs.iter().map(|o| o.dir).collect();
        f.debug_struct("CallTables")
            .field("dirs", &dirs)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<'o> CallTables<'o> {
    /// Creates the tables in each of `outputs`.
    pub fn new(outputs: &'o [TableOutput<'o>]) -> Result<CallTables<'o>, ExportError> {
        Ok(CallTables {
            outputs,
            reads: RowBatches::new(outputs, "reads", reads_frame)?,
            sends: RowBatches::new(outputs, "sends", sends_frame)?,
            exchanges: RowBatches::new(outputs, "exchanges", exchanges_frame)?,
            connects: Vec::new(),
            failed: None,
        })
    }

    /// Keeps the first failure; later rows are not written.
    fn attempt(&mut self, write: impl FnOnce(&mut Self) -> Result<(), ExportError>) {
        if self.failed.is_none() {
            if let Err(e) = write(self) {
                self.failed = Some(e);
            }
        }
    }

    /// Writes the rest: the last rows of the join's tables, then `connects`, `tests` (`tests`:
    /// the run's test rows) and `flows`, and closes every file.
    pub fn finish(
        self,
        calls: &[SocketCall],
        analysis: &Analysis,
        tests: &[TestRow],
    ) -> Result<(), ExportError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let outputs = self.outputs;
        self.reads.finish(calls)?;
        self.sends.finish(calls)?;
        let connects = &self.connects;
        write_batched(outputs, "connects", connects.len(), |at| {
            connects_frame(calls, &connects[at])
        })?;
        self.exchanges.finish(calls)?;
        write_batched(outputs, "tests", tests.len(), |at| tests_frame(&tests[at]))?;
        write_flows(analysis, outputs)
    }
}

impl<'a> JoinSink<'a> for CallTables<'_> {
    fn read(&mut self, calls: &'a [SocketCall], r: &ReadBlame) {
        self.attempt(|t| t.reads.add(calls, r));
    }

    fn send(&mut self, calls: &'a [SocketCall], s: &SendTiming) {
        self.attempt(|t| t.sends.add(calls, s));
    }

    fn exchange(&mut self, calls: &'a [SocketCall], e: &Exchange) {
        self.attempt(|t| t.exchanges.add(calls, e));
    }

    fn end(&mut self, _: &'a [SocketCall], end: &JoinEnd) {
        self.connects = end.connects.clone();
    }
}

/// A table being written in batches.
enum BatchedTable {
    Csv(polars::io::csv::write::BatchedWriter<BufWriter<File>>),
    Parquet(Box<polars::io::parquet::write::BatchedWriter<File>>),
}

/// One table being written in batches into each of several outputs.
struct TableWriters<'a> {
    name: &'static str,
    writers: Vec<(PathBuf, BatchedTable, &'a TableOutput<'a>)>,
}

impl<'a> TableWriters<'a> {
    /// Creates `name` in each of `outputs`, for frames with the columns of `like`.
    fn new(
        outputs: &'a [TableOutput<'a>],
        name: &'static str,
        like: &DataFrame,
    ) -> Result<TableWriters<'a>, ExportError> {
        let frame_error = |source| ExportError::Frame {
            table: name,
            source,
        };
        let mut writers = Vec::with_capacity(outputs.len());
        for out in outputs {
            let format = out.format;
            let schema = match out.with_host(like).map_err(frame_error)? {
                Some(f) => f.schema().clone(),
                None => like.schema().clone(),
            };
            let (path, file) = create_table_file(out.dir, name, format)?;
            let writer = match format {
                TableFormat::Csv => CsvWriter::new(BufWriter::new(file))
                    .include_header(true)
                    .batched(&schema)
                    .map(BatchedTable::Csv),
                TableFormat::Parquet => ParquetWriter::new(file)
                    .with_compression(ParquetCompression::Zstd(None))
                    .batched(&schema)
                    .map(|w| BatchedTable::Parquet(Box::new(w))),
            };
            let writer = writer.map_err(|source| ExportError::Write {
                path: path.clone(),
                source,
            })?;
            writers.push((path, writer, out));
        }
        Ok(TableWriters { name, writers })
    }

    /// Writes the rows of `frame` (the table's columns) into every output.
    fn write(&mut self, frame: &DataFrame) -> Result<(), ExportError> {
        for (path, w, out) in &mut self.writers {
            let tagged = out.with_host(frame).map_err(|source| ExportError::Frame {
                table: self.name,
                source,
            })?;
            let rows = tagged.as_ref().unwrap_or(frame);
            let written = match w {
                BatchedTable::Csv(w) => w.write_batch(rows),
                BatchedTable::Parquet(w) => w.write_batch(rows),
            };
            written.map_err(|source| ExportError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ExportError> {
        for (path, mut w, _) in self.writers {
            let finished = match &mut w {
                BatchedTable::Csv(w) => w.finish(),
                BatchedTable::Parquet(w) => w.finish().map(drop),
            };
            finished.map_err(|source| ExportError::Write { path, source })?;
        }
        Ok(())
    }
}

/// Writes table `name` of `rows` rows into each of `outputs`, built [`BATCH_ROWS`] at a time by
/// `build` (given the range of rows to build; an empty table is built once, for its columns).
/// A CSV file is the same as one written whole; a Parquet file has a row group per batch.
pub fn write_batched(
    outputs: &[TableOutput],
    name: &'static str,
    rows: usize,
    mut build: impl FnMut(std::ops::Range<usize>) -> Result<DataFrame, ExportError>,
) -> Result<(), ExportError> {
    if outputs.is_empty() {
        return Ok(());
    }
    let mut batches = (0..rows.max(1))
        .step_by(BATCH_ROWS)
        .map(|at| at..rows.min(at + BATCH_ROWS));
    let frame = build(batches.next().unwrap_or_default())?;
    let mut writers = TableWriters::new(outputs, name, &frame)?;
    writers.write(&frame)?;
    drop(frame);
    for rows in batches {
        writers.write(&build(rows)?)?;
    }
    writers.finish()
}

/// Creates `dir/name.EXT` (and `dir`).
fn create_table_file(
    dir: &Path,
    name: &str,
    format: TableFormat,
) -> Result<(PathBuf, File), ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
        path: dir.into(),
        source,
    })?;
    let path = dir.join(format!("{name}.{}", format.extension()));
    match File::create(&path) {
        Ok(file) => Ok((path, file)),
        Err(source) => Err(ExportError::Io { path, source }),
    }
}

/// Writes `frame` as `dir/name.csv` or `dir/name.parquet`, creating `dir`. Returns the path.
pub fn write_table(
    out: &TableOutput,
    name: &'static str,
    frame: &mut DataFrame,
) -> Result<PathBuf, ExportError> {
    let mut tagged = out.with_host(frame).map_err(|source| ExportError::Frame {
        table: name,
        source,
    })?;
    let frame = tagged.as_mut().unwrap_or(frame);
    let (path, file) = create_table_file(out.dir, name, out.format)?;
    let result = match out.format {
        TableFormat::Csv => CsvWriter::new(BufWriter::new(file))
            .include_header(true)
            .finish(frame),
        TableFormat::Parquet => ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(frame)
            .map(|_| ()),
    };
    result.map_err(|source| ExportError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_analysis_still_has_every_column() {
        let a = Analysis::default();
        let flows = flows_frame(&a).unwrap();
        assert_eq!(flows.height(), 0);
        assert!(flows
            .get_column_names()
            .iter()
            .any(|c| c.as_str() == "rtt_p99_ns"));
        assert_eq!(packets_frame(&a).unwrap().width(), 14);
    }

    #[test]
    fn flag_letters() {
        assert_eq!(flag_string(0x12), "S.");
        assert_eq!(flag_string(0x19), "FP.");
    }

    #[test]
    fn writes_csv_and_parquet() {
        let dir = std::env::temp_dir().join(format!("netblame-export-{}", std::process::id()));
        let mut f = flows_frame(&Analysis::default()).unwrap();
        let out = |format| TableOutput {
            dir: &dir,
            format,
            host: None,
        };
        let csv = write_table(&out(TableFormat::Csv), "flows", &mut f).unwrap();
        let header = std::fs::read_to_string(&csv).unwrap();
        assert!(header.starts_with("flow_id,proto,direction,src_addr"));
        let pq = write_table(&out(TableFormat::Parquet), "flows", &mut f).unwrap();
        assert!(std::fs::read(&pq).unwrap().starts_with(b"PAR1"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn packets_added_as_the_pass_goes_equal_the_table_of_the_whole_analysis() {
        // Two flows, the second first seen after some packets were already added.
        let flows: Vec<Flow> = (1..=2)
            .map(|id| {
                let mut f = empty_flow();
                f.id = id;
                f.endpoints[1].port = 1000 + id as u16;
                f
            })
            .collect();
        let packet = |i: i64, flow_id: u32| PacketRecord {
            ts_ns: i,
            flow_id,
            dir: (i % 2) as u8,
            rel_seq: i,
            rel_ack: None,
            payload_len: 0,
            flags: 0x10,
            window: 100,
            class: netblame_correlate::PacketClass::New,
        };
        let packets: Vec<PacketRecord> = (0..8).map(|i| packet(i, 1 + u32::from(i >= 4))).collect();
        let dir = std::env::temp_dir().join(format!("netblame-pass-{}", std::process::id()));
        let outputs = [TableOutput {
            dir: &dir,
            format: TableFormat::Csv,
            host: None,
        }];
        let mut table = PacketTable::new(&outputs).unwrap();
        table
            .add(&flows[..1], packets[..4].iter().copied())
            .unwrap();
        table.add(&flows, []).unwrap();
        table.add(&flows, packets[4..].iter().copied()).unwrap();
        table.finish().unwrap();
        let streamed = std::fs::read_to_string(dir.join("packets.csv")).unwrap();
        let a = Analysis {
            flows,
            packets,
            ..Analysis::default()
        };
        let mut whole = packets_frame(&a).unwrap();
        let whole_dir = dir.join("whole");
        let out = TableOutput {
            dir: &whole_dir,
            format: TableFormat::Csv,
            host: None,
        };
        let path = write_table(&out, "packets", &mut whole).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), streamed);
        assert!(streamed.contains(",1002,"), "{streamed}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn call_tables_fed_row_by_row_equal_the_tables_written_whole() {
        use netblame_correlate::{Api, CallKind, ReadTiming, Verdict};
        let call = |i: usize, kind| SocketCall {
            kind,
            pid: 7,
            tid: 7,
            fd: 3,
            stream: 1,
            t_call_ns: i as i64 * 1_000,
            t_return_ns: i as i64 * 1_000 + 500,
            bytes: 10,
            offset: i as u64 * 10,
            seq: None,
            peek: false,
            test: (i % 3 == 0).then(|| "t.py::test_a (call)".into()),
            addrs: None,
            tcp: true,
            nonblocking: i % 2 == 0,
            api: Api::Recv,
            ready: 0,
            errno: 0,
        };
        // 7 reads and 4 sends: batches of 3 (BATCH_ROWS under test), a last one partly full;
        // no exchange: that table is written once, empty, with its columns.
        let calls: Vec<SocketCall> = (0..11)
            .map(|i| {
                call(
                    i,
                    if i < 7 {
                        CallKind::Recv
                    } else {
                        CallKind::Send
                    },
                )
            })
            .collect();
        let reads: Vec<ReadBlame> = (0..7)
            .map(|i| ReadBlame {
                call: i,
                flow_id: (i > 1).then_some(1),
                timing: ReadTiming {
                    peer_wait_ns: i as i64 * 100,
                    ..ReadTiming::default()
                },
                verdict: Verdict::Ok,
                causality_violation_ns: None,
                segments: 1,
                response_ns: Some(5),
                request_held: None,
                wait: None,
                stall_held: None,
            })
            .collect();
        let sends: Vec<SendTiming> = (7..11)
            .map(|i| SendTiming {
                call: i,
                flow_id: Some(1),
                send_blocked_ns: 500,
                first_sent_ns: Some(i as i64 * 1_000 + 600),
                wire_delay_ns: Some(100),
                held_by: None,
                wait: None,
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("netblame-calltables-{}", std::process::id()));
        let (streamed, whole) = (dir.join("streamed"), dir.join("whole"));
        let out = |dir, format| TableOutput {
            dir,
            format,
            host: None,
        };
        let outputs = [
            out(&streamed, TableFormat::Csv),
            out(&streamed, TableFormat::Parquet),
        ];
        let mut tables = CallTables::new(&outputs).unwrap();
        // Interleaved, as the join hands them over.
        for (i, r) in reads.iter().enumerate() {
            tables.read(&calls, r);
            if let Some(s) = sends.get(i) {
                tables.send(&calls, s);
            }
        }
        tables.end(&calls, &JoinEnd::default());
        tables.finish(&calls, &Analysis::default(), &[]).unwrap();
        let frames = [
            ("reads", reads_frame(&calls, &reads).unwrap()),
            ("sends", sends_frame(&calls, &sends).unwrap()),
            ("exchanges", exchanges_frame(&calls, &[]).unwrap()),
            ("connects", connects_frame(&calls, &[]).unwrap()),
        ];
        for (name, mut frame) in frames {
            let path = write_table(&out(&whole, TableFormat::Csv), name, &mut frame).unwrap();
            let csv = |p: &Path| std::fs::read_to_string(p).unwrap();
            let file = streamed.join(format!("{name}.csv"));
            assert_eq!(csv(&file), csv(&path), "{name}.csv");
            let pq = streamed.join(format!("{name}.parquet"));
            let read = ParquetReader::new(File::open(pq).unwrap())
                .finish()
                .unwrap();
            assert!(read.equals_missing(&frame), "{name}.parquet");
        }
        for name in ["tests", "flows"] {
            assert!(streamed.join(format!("{name}.csv")).exists(), "{name}.csv");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn packets_written_in_batches_equal_the_whole_table() {
        let mut flow = empty_flow();
        flow.id = 1;
        let packets = (0..7)
            .map(|i| PacketRecord {
                ts_ns: i,
                flow_id: 1,
                dir: (i % 2) as u8,
                rel_seq: i * 100,
                rel_ack: (i > 2).then_some(i),
                payload_len: 100,
                flags: 0x18,
                window: 512,
                class: netblame_correlate::PacketClass::New,
            })
            .collect();
        let a = Analysis {
            flows: vec![flow],
            packets,
            ..Analysis::default()
        };
        let dir = std::env::temp_dir().join(format!("netblame-batches-{}", std::process::id()));
        let dataset = dir.join("run=1");
        let out = |dir, format, host| TableOutput { dir, format, host };
        let outputs = [
            out(&dir, TableFormat::Csv, None),
            out(&dir, TableFormat::Parquet, None),
            out(&dataset, TableFormat::Parquet, Some("ci-7")),
        ];
        let mut table = PacketTable::new(&outputs).unwrap();
        table.add(&a.flows, a.packets.iter().copied()).unwrap();
        table.finish().unwrap();
        let whole = packets_frame(&a).unwrap();
        let read = |p: PathBuf| ParquetReader::new(File::open(p).unwrap()).finish().unwrap();
        let pq = read(dir.join("packets.parquet"));
        assert!(pq.equals_missing(&whole));
        // The dataset's copy: the same rows, and every one tagged with the host.
        let tagged = read(dataset.join("packets.parquet"));
        assert_eq!(tagged.height(), 7);
        assert!(tagged.drop("host").unwrap().equals_missing(&whole));
        let hosts = tagged.column("host").unwrap().str().unwrap();
        assert!(hosts.iter().all(|h| h == Some("ci-7")));
        let csv = std::fs::read_to_string(dir.join("packets.csv")).unwrap();
        assert_eq!(csv.lines().count(), 8, "{csv}");
        assert_eq!(csv.matches("ts_ns").count(), 1);
        // Byte for byte the CSV of the table written whole.
        let whole_dir = dir.join("whole");
        let mut whole = whole;
        let path = write_table(
            &out(&whole_dir, TableFormat::Csv, None),
            "packets",
            &mut whole,
        );
        assert_eq!(std::fs::read_to_string(path.unwrap()).unwrap(), csv);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
