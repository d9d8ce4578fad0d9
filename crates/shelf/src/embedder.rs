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
/// the store already holds (most parts), else none. A stored model that
/// cannot be loaded here (the server was given it by a path) leaves the
/// search to words, with a warning.
pub async fn for_search(
    globals: &Globals,
    store: &Store,
    args: &SearchEmbedArgs,
) -> anyhow::Result<Option<Embedder>> {
    if args.words_only {
        return Ok(None);
    }
    let embedder = match &args.embed {
        Some(name) => Embedder::load(globals, name).await?,
        None => {
            let Some(name) = store.vector_models()?.into_iter().next() else {
                return Ok(None);
            };
            match Embedder::load(globals, &name).await {
                Ok(embedder) => embedder,
                Err(error) => {
                    eprintln!(
                        "searching by words alone: the stored vectors' model {name:?} cannot be loaded ({error:#}); name it with --embed"
                    );
                    return Ok(None);
                }
            }
        }
    };
    tokio::task::block_in_place(|| embedder.catch_up(store))?;
    Ok(Some(embedder))
}

impl Embedder {
    /// Load `name` (a store name or a path), which must be an embedding
    /// model. Its vectors are stored under the name the server gives it: a
    /// path's file name, so the two share them.
    pub async fn load(globals: &Globals, name: &str) -> anyhow::Result<Self> {
        let layers = globals.layers()?;
        let path = catalog::resolve(&layers, name)?;
        let stored_as = match catalog::looks_like_path(name) {
            true => catalog::file_model_name(&path),
            false => name.to_owned(),
        };
        let model = crate::run::load(path, globals, None).await?;
        if !model.info().embedding {
            anyhow::bail!("{name:?} is not an embedding model");
        }
        Ok(Self {
            model,
            name: stored_as,
        })
    }

    /// Write vectors for every file that lacks current ones from this
    /// model; the number of files embedded. Blocks: call off the async
    /// threads.
    pub fn catch_up(&self, store: &Store) -> anyhow::Result<usize> {
        let mut files = 0;
        let mut last: Option<(String, String, String)> = None;
        while let Some(file) = store.next_unembedded(&self.name)? {
            // A file whose vectors could not be stored would come back for
            // ever.
            let this = (file.watch.clone(), file.path.clone(), file.hash.clone());
            if last.as_ref() == Some(&this) {
                anyhow::bail!("the vectors of {:?} were not kept", file.path);
            }
            if files == 0 {
                eprint!("embedding the watched files with {} ", self.name);
            }
            self.write(store, &file)
                .with_context(|| format!("embedding {:?}", file.path))?;
            files += 1;
            last = Some(this);
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
        match tokio::task::block_in_place(|| self.vectors(&[text])) {
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
