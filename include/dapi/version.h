#ifndef DAPI_VERSION_H
#define DAPI_VERSION_H
#define DAPI_VERSION "0.1.0"
#endif
