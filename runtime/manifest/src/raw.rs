//! Parse, then build: the TOML is first read into these raw, span-carrying
//! structures (no I/O, unknown fields rejected), then validated into a
//! [`Manifest`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::{
    check_relative_path, Digest, ExecutionTarget, FileRef, Graph, GraphEncoding, Limits, Manifest,
    ManifestError, ManifestErrorKind, PackageInfo, Stage, Tolerance,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    package: RawPackage,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    modules: BTreeMap<Spanned<String>, RawFile>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    graphs: BTreeMap<Spanned<String>, RawGraph>,
    #[serde(default)]
    stages: Vec<RawStage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    path: Spanned<String>,
    digest: Spanned<String>,
    #[serde(default)]
    encoding: Option<Spanned<String>>,
    #[serde(default)]
    targets: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tolerance: Option<Spanned<RawTolerance>>,
    #[serde(default)]
    outputs: Vec<Spanned<RawOutput>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    abs: Option<f64>,
    rel: Option<f64>,
    argmax: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    index: u32,
    abs: Option<f64>,
    rel: Option<f64>,
    argmax: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: String,
    publisher: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<Spanned<u64>>,
    memory_bytes: Option<Spanned<u64>>,
    table_elements: Option<Spanned<u64>>,
    module_bytes: Option<Spanned<u64>>,
    output_bytes: Option<Spanned<u64>>,
    stderr_bytes: Option<Spanned<u64>>,
    host_calls: Option<Spanned<u64>>,
    wall_time_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: Spanned<String>,
    digest: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    module: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    read: Vec<Spanned<String>>,
    #[serde(default)]
    graphs: Vec<Spanned<String>>,
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        kind: ManifestErrorKind,
    ) -> ManifestError {
        ManifestError {
            file: self.origin.to_string(),
            line: Some(self.line(span)),
            field: field.into(),
            kind,
        }
    }

    fn invalid(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> ManifestError {
        self.err(span, field, ManifestErrorKind::Invalid(msg.into()))
    }

    fn digest(&self, s: &Spanned<String>, field: &str) -> Result<Digest, ManifestError> {
        s.get_ref().parse::<Digest>().map_err(|e| {
            self.invalid(
                &s.span(),
                field,
                format!("{e}; compute it with `tally hash FILE`"),
            )
        })
    }

    fn path(&self, s: &Spanned<String>, field: &str) -> Result<String, ManifestError> {
        check_relative_path(s.get_ref()).map_err(|why| {
            self.invalid(
                &s.span(),
                field,
                format!("unsafe path `{}`: {why}", s.get_ref()),
            )
        })?;
        Ok(s.get_ref().clone())
    }
}

impl Ctx<'_> {
    /// A checked file reference whose path is not yet in `paths`.
    fn file_ref(
        &self,
        f: &RawFile,
        field: &str,
        paths: &mut BTreeSet<String>,
    ) -> Result<FileRef, ManifestError> {
        let path = self.path(&f.path, &format!("{field}.path"))?;
        let digest = self.digest(&f.digest, &format!("{field}.digest"))?;
        if !paths.insert(path.clone()) {
            return Err(self.err(
                &f.path.span(),
                format!("{field}.path"),
                ManifestErrorKind::Duplicate(path),
            ));
        }
        Ok(FileRef { path, digest })
    }
}

impl Ctx<'_> {
    fn tolerance(
        &self,
        span: &Range<usize>,
        field: &str,
        base: Tolerance,
        abs: Option<f64>,
        rel: Option<f64>,
        argmax: Option<bool>,
    ) -> Result<Tolerance, ManifestError> {
        let t = Tolerance {
            abs: abs.unwrap_or(base.abs),
            rel: rel.unwrap_or(base.rel),
            argmax: argmax.unwrap_or(base.argmax),
        };
        if !(t.abs.is_finite() && t.abs >= 0.0 && t.rel.is_finite() && t.rel >= 0.0) {
            return Err(self.invalid(
                span,
                field,
                "`abs` and `rel` are finite and not negative, e.g. abs = 1e-4, rel = 1e-3",
            ));
        }
        Ok(t)
    }

    fn graph(
        &self,
        g: &RawGraph,
        field: &str,
        paths: &mut BTreeSet<String>,
    ) -> Result<Graph, ManifestError> {
        let file = self.file_ref(
            &RawFile {
                path: g.path.clone(),
                digest: g.digest.clone(),
            },
            field,
            paths,
        )?;
        let encoding = match &g.encoding {
            None => GraphEncoding::Onnx,
            Some(e) if e.get_ref() == "onnx" => GraphEncoding::Onnx,
            Some(e) => {
                return Err(self.invalid(
                    &e.span(),
                    format!("{field}.encoding"),
                    format!("unsupported encoding `{}`; use \"onnx\"", e.get_ref()),
                ))
            }
        };
        let mut targets = Vec::new();
        for t in g.targets.iter().flatten() {
            let target = match t.get_ref().as_str() {
                "cpu" => ExecutionTarget::Cpu,
                "gpu" => ExecutionTarget::Gpu,
                other => {
                    return Err(self.invalid(
                        &t.span(),
                        format!("{field}.targets"),
                        format!("unknown execution target `{other}`; use \"cpu\" or \"gpu\""),
                    ))
                }
            };
            if targets.contains(&target) {
                return Err(self.err(
                    &t.span(),
                    format!("{field}.targets"),
                    ManifestErrorKind::Duplicate(t.get_ref().clone()),
                ));
            }
            targets.push(target);
        }
        if targets.is_empty() {
            targets.push(ExecutionTarget::Cpu);
        }
        targets.sort();
        let tolerance = match &g.tolerance {
            None => Tolerance::default(),
            Some(t) => {
                let r = *t.get_ref();
                self.tolerance(
                    &t.span(),
                    &format!("{field}.tolerance"),
                    Tolerance::default(),
                    r.abs,
                    r.rel,
                    r.argmax,
                )?
            }
        };
        let mut outputs = BTreeMap::new();
        for (i, o) in g.outputs.iter().enumerate() {
            let ofield = format!("{field}.outputs[{i}]");
            let r = o.get_ref();
            let t = self.tolerance(&o.span(), &ofield, tolerance, r.abs, r.rel, r.argmax)?;
            if outputs.insert(r.index, t).is_some() {
                return Err(self.err(
                    &o.span(),
                    ofield,
                    ManifestErrorKind::Duplicate(format!("output {}", r.index)),
                ));
            }
        }
        Ok(Graph {
            file,
            encoding,
            targets,
            tolerance,
            outputs,
        })
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        ManifestError {
            file: origin.to_string(),
            line,
            field: String::new(),
            kind: ManifestErrorKind::Syntax(e.message().to_string()),
        }
    })?;
    let cx = Ctx { text, origin };

    // [package]
    let p = &raw.package;
    if !is_name(p.name.get_ref()) {
        return Err(cx.invalid(
            &p.name.span(),
            "package.name",
            "use 1 to 64 lowercase letters, digits, '-' or '_'",
        ));
    }
    let version = p.version.get_ref();
    if version.is_empty()
        || version.len() > 64
        || version.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(cx.invalid(
            &p.version.span(),
            "package.version",
            "use 1 to 64 printable characters without spaces, e.g. \"1.0.0\"",
        ));
    }
    let mut publisher = [0u8; 32];
    if hex::decode_to_slice(p.publisher.get_ref(), &mut publisher).is_err() {
        return Err(cx.invalid(
            &p.publisher.span(),
            "package.publisher",
            "expected the publisher's ed25519 public key as 64 hex digits (the contents of KEY.pub written by `tally keygen`)",
        ));
    }
    let package = PackageInfo {
        name: p.name.get_ref().clone(),
        version: version.clone(),
        description: p.description.clone(),
        publisher,
    };

    // [limits]
    let l = &raw.limits;
    let mut limits = Limits::default();
    for (name, raw, slot) in [
        ("fuel", &l.fuel, &mut limits.fuel),
        ("memory_bytes", &l.memory_bytes, &mut limits.memory_bytes),
        (
            "table_elements",
            &l.table_elements,
            &mut limits.table_elements,
        ),
        ("module_bytes", &l.module_bytes, &mut limits.module_bytes),
        ("output_bytes", &l.output_bytes, &mut limits.output_bytes),
        ("stderr_bytes", &l.stderr_bytes, &mut limits.stderr_bytes),
        ("host_calls", &l.host_calls, &mut limits.host_calls),
        ("wall_time_ms", &l.wall_time_ms, &mut limits.wall_time_ms),
    ] {
        if let Some(v) = raw {
            if *v.get_ref() == 0 {
                return Err(cx.invalid(
                    &v.span(),
                    format!("limits.{name}"),
                    "a limit must be greater than zero; leave it out to get the default",
                ));
            }
            *slot = Some(*v.get_ref());
        }
    }

    // Counts first: every check below is then linear in a bounded input.
    let counts = [
        ("modules", raw.modules.len()),
        ("files", raw.files.len()),
        ("graphs", raw.graphs.len()),
        ("stages", raw.stages.len()),
    ];
    let per_stage = raw.stages.iter().enumerate().flat_map(|(i, s)| {
        [
            (format!("stages[{i}].args"), s.args.len()),
            (format!("stages[{i}].env"), s.env.len()),
            (format!("stages[{i}].read"), s.read.len()),
            (format!("stages[{i}].graphs"), s.graphs.len()),
        ]
    });
    for (field, n) in counts
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .chain(per_stage)
    {
        if n > crate::MAX_ENTRIES {
            return Err(ManifestError {
                file: origin.to_string(),
                line: None,
                field,
                kind: ManifestErrorKind::Invalid(format!(
                    "{n} entries; a manifest list holds at most {}",
                    crate::MAX_ENTRIES
                )),
            });
        }
    }

    // Modules and files: every path once.
    let mut paths = BTreeSet::new();
    let mut modules = BTreeMap::new();
    for (name, f) in &raw.modules {
        let field = format!("modules.{}", name.get_ref());
        if !is_name(name.get_ref()) {
            return Err(cx.invalid(
                &name.span(),
                field,
                "a module name has 1 to 64 lowercase letters, digits, '-' or '_'",
            ));
        }
        let file = cx.file_ref(f, &field, &mut paths)?;
        modules.insert(name.get_ref().clone(), file);
    }
    let mut files = Vec::new();
    for (i, f) in raw.files.iter().enumerate() {
        let field = format!("files[{i}]");
        files.push(cx.file_ref(f, &field, &mut paths)?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut graphs = BTreeMap::new();
    for (name, g) in &raw.graphs {
        let field = format!("graphs.{}", name.get_ref());
        if !is_name(name.get_ref()) {
            return Err(cx.invalid(
                &name.span(),
                field,
                "a graph name has 1 to 64 lowercase letters, digits, '-' or '_'",
            ));
        }
        graphs.insert(name.get_ref().clone(), cx.graph(g, &field, &mut paths)?);
    }

    // Stages.
    if raw.stages.is_empty() {
        return Err(ManifestError {
            file: origin.to_string(),
            line: None,
            field: "stages".into(),
            kind: ManifestErrorKind::Invalid(
                "a package needs at least one stage: add a [[stages]] table with `name` and `module`".into(),
            ),
        });
    }
    let file_paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut stage_names = BTreeSet::new();
    let mut stages = Vec::new();
    for (i, s) in raw.stages.iter().enumerate() {
        let field = format!("stages[{i}]");
        if !is_name(s.name.get_ref()) {
            return Err(cx.invalid(
                &s.name.span(),
                format!("{field}.name"),
                "a stage name has 1 to 64 lowercase letters, digits, '-' or '_'",
            ));
        }
        if !stage_names.insert(s.name.get_ref().clone()) {
            return Err(cx.err(
                &s.name.span(),
                format!("{field}.name"),
                ManifestErrorKind::Duplicate(s.name.get_ref().clone()),
            ));
        }
        if !modules.contains_key(s.module.get_ref()) {
            return Err(cx.err(
                &s.module.span(),
                format!("{field}.module"),
                ManifestErrorKind::Dangling {
                    what: "module",
                    name: s.module.get_ref().clone(),
                },
            ));
        }
        let mut env = BTreeMap::new();
        for (k, v) in &s.env {
            let key = k.get_ref();
            if key.is_empty() || key.contains('=') || key.contains('\0') || v.contains('\0') {
                return Err(cx.invalid(
                    &k.span(),
                    format!("{field}.env.{key}"),
                    "an environment name is non-empty and has no '=' or NUL; values have no NUL",
                ));
            }
            env.insert(key.clone(), v.clone());
        }
        if s.args.iter().any(|a| a.contains('\0')) {
            return Err(cx.invalid(
                &s.name.span(),
                format!("{field}.args"),
                "arguments cannot contain NUL",
            ));
        }
        let mut read = Vec::new();
        let mut read_set = std::collections::BTreeSet::new();
        for (j, r) in s.read.iter().enumerate() {
            let rfield = format!("{field}.read[{j}]");
            let path = cx.path(r, &rfield)?;
            if !file_paths.contains(path.as_str()) {
                return Err(cx.err(
                    &r.span(),
                    rfield,
                    ManifestErrorKind::Dangling {
                        what: "file",
                        name: path,
                    },
                ));
            }
            if !read_set.insert(path.clone()) {
                return Err(cx.err(&r.span(), rfield, ManifestErrorKind::Duplicate(path)));
            }
            read.push(path);
        }
        let mut stage_graphs = Vec::new();
        let mut graph_set = std::collections::BTreeSet::new();
        for (j, g) in s.graphs.iter().enumerate() {
            let gfield = format!("{field}.graphs[{j}]");
            let name = g.get_ref().clone();
            if !graphs.contains_key(&name) {
                return Err(cx.err(
                    &g.span(),
                    gfield,
                    ManifestErrorKind::Dangling {
                        what: "graph",
                        name,
                    },
                ));
            }
            if !graph_set.insert(name.clone()) {
                return Err(cx.err(&g.span(), gfield, ManifestErrorKind::Duplicate(name)));
            }
            stage_graphs.push(name);
        }
        stages.push(Stage {
            name: s.name.get_ref().clone(),
            module: s.module.get_ref().clone(),
            args: s.args.clone(),
            env,
            read,
            graphs: stage_graphs,
        });
    }

    Ok(Manifest {
        package,
        limits,
        modules,
        files,
        graphs,
        stages,
    })
}
