//! The kubelet's plugin registration service: the kubelet finds the registration socket in its
//! `plugins_registry` directory, asks what it is (`GetInfo`), then calls the driver at the endpoint
//! it names and says whether registration worked.

use std::path::PathBuf;

use tonic::{Request, Response, Status};

use super::generated::pluginregistration::registration_server;
use super::generated::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};

#[derive(Debug, Clone)]
pub struct Registration {
    endpoint: PathBuf,
}

impl Registration {
    pub fn new(endpoint: PathBuf) -> Self {
        Self { endpoint }
    }
}

#[tonic::async_trait]
impl registration_server::Registration for Registration {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".into(),
            name: multicluster_core::playground::CSI_DRIVER.into(),
            endpoint: self.endpoint.display().to_string(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!("registered with the kubelet");
        } else {
            tracing::error!(error = %status.error, "the kubelet refused the registration");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}
