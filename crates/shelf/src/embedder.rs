//! The assistant's embedding model loaded in this process, for `shelf ask`
//! and `shelf watch search`: it brings the store's vectors up to date (the
//! server does this in the background) and embeds the query, so the
//! terminal searches as the served `assistant` model does. Knows nothing of
//! the agent loop.

use std::io::Write as _;

use anyhow::Context;
use shelf_assistant::vectors::Unembedded;
use shelf_assistant::{Embedding, Store};
use shelf_engine::{LoadedModel, Token};
use shelf_engine_llama::LlamaModelHandle;

use crate::catalog;
use crate::cli::{Globals, SearchEmbedArgs};

/// Parts embedded in one call to the model.
const BATCH: usize = 16;

/// An embedding model and the name its vectors are stored under.
pub struct Embedder {
    model: LlamaModelHandle,
    name: String,
}

/// The embedding model a terminal search uses, loaded, with the store's
/// vectors brought up to date: the one named, else the one whose vectors
/// the store already holds (most parts), else none.
pub async fn for_search(
    globals: &Globals,
    store: &Store,
    args: &SearchEmbedArgs,
) -> anyhow::Result<Option<Embedder>> {
    if args.words_only {
        return Ok(None);
    }
    let name = match &args.embed {
        Some(name) => name.clone(),
        None => match store.vector_models()?.into_iter().next() {
            Some(name) => name,
            None => return Ok(None),
        },
    };
    let embedder = Embedder::load(globals, &name).await?;
    embedder.catch_up(store)?;
    Ok(Some(embedder))
}

impl Embedder {
    /// Load `name` (a store name or a path), which must be an embedding model.
    pub async fn load(globals: &Globals, name: &str) -> anyhow::Result<Self> {
        let layers = globals.layers()?;
        let path = catalog::resolve(&layers, name)?;
        let model = crate::run::load(path, globals, None).await?;
        if !model.info().embedding {
            anyhow::bail!("{name:?} is not an embedding model");
        }
        Ok(Self {
            model,
            name: name.to_owned(),
        })
    }

    /// Write vectors for every file that lacks current ones from this
    /// model; the number of files embedded.
    pub fn catch_up(&self, store: &Store) -> anyhow::Result<usize> {
        let mut files = 0;
        while let Some(file) = store.next_unembedded(&self.name)? {
            if files == 0 {
                eprint!("embedding the watched files with {} ", self.name);
            }
            self.write(store, &file)
                .with_context(|| format!("embedding {:?}", file.path))?;
            files += 1;
            eprint!(".");
            let _ = std::io::stderr().flush();
        }
        if files > 0 {
            eprintln!(" {files} file(s)");
        }
        Ok(files)
    }

    fn write(&self, store: &Store, file: &Unembedded) -> anyhow::Result<()> {
        let mut made = Vec::with_capacity(file.parts.len());
        for batch in file.parts.chunks(BATCH) {
            let texts: Vec<&str> = batch.iter().map(|p| p.text.as_str()).collect();
            let vectors = self.vectors(&texts)?;
            made.extend(batch.iter().cloned().zip(vectors));
        }
        store.set_vectors(&file.watch, &file.path, &file.hash, &self.name, &made)?;
        Ok(())
    }

    /// `text`'s vector; on failure the search goes on with words alone.
    pub fn query(&self, text: &str) -> Option<Embedding> {
        match self.vectors(&[text]) {
            Ok(mut vectors) => vectors.pop().map(|vector| Embedding {
                model: self.name.clone(),
                vector,
            }),
            Err(error) => {
                tracing::warn!(error = %error, "embedding a search failed");
                None
            }
        }
    }

    /// One vector for each text, each cut to the model's window as the
    /// server's embeddings are.
    fn vectors(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let window = self.model.info().n_ctx as usize;
        let lists = texts
            .iter()
            .map(|text| {
                let mut tokens: Vec<Token> = self.model.tokenize(text)?;
                tokens.truncate(window);
                Ok(tokens)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(self.model.embed(lists)?)
    }
}
