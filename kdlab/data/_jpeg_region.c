/* kdlab.data._jpeg_region: decode one rectangle of a JPEG, scaled by M/8 in the DCT domain.
 *
 * The one piece of the file-image pipeline no installed library exposes: libjpeg-turbo's
 * partial decoding (jpeg_crop_scanline for the columns, jpeg_skip_scanlines for the rows above,
 * stopping after the last row needed) combined with its M/8 DCT scaling. A RandomResizedCrop
 * box then costs the entropy decoding of the rows down to the box's bottom and the inverse DCT,
 * upsampling and colour conversion of the box alone, at the smallest scale that still has the
 * output's resolution.
 *
 * decode(data, scale_num, x, y, w, h) -> bytearray of h*w*3 bytes (RGB, row-major), the box
 * (x, y, w, h) of the image decoded at scale_num/8 (whose size is ceil(W*scale_num/8) x
 * ceil(H*scale_num/8), libjpeg's rounding). Raises ValueError for a box outside that image, and
 * Unsupported (a ValueError) for anything libjpeg reports, warnings included (damaged data) and
 * for CMYK/YCCK files: the caller then falls back to its full decoder, which decides what a bad
 * file is. Built by setup.py as an optional extension; kdlab works without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>

#ifndef LIBJPEG_TURBO_VERSION
#error "libjpeg-turbo is needed (jpeg_crop_scanline, jpeg_skip_scanlines)"
#endif

static PyObject *Unsupported;

struct region_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
    struct region_error *err = (struct region_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning: damaged data that libjpeg would paper over */
        on_error(cinfo);
    }
}

/* 0 on success; 1 libjpeg error (message in err); 2 colour space; 3 box outside the image */
static int decode_box(const unsigned char *data, size_t size, int scale_num, JDIMENSION x, JDIMENSION y,
                      JDIMENSION w, JDIMENSION h, unsigned char *out, struct region_error *err) {
    struct jpeg_decompress_struct cinfo;
    unsigned char *volatile row = NULL; /* volatile: read after a longjmp */
    volatile int status = 0;
    cinfo.err = jpeg_std_error(&err->pub);
    err->pub.error_exit = on_error;
    err->pub.emit_message = on_message;
    jpeg_create_decompress(&cinfo);
    if (setjmp(err->jump)) {
        free(row);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        status = 2;
    } else {
        cinfo.out_color_space = JCS_RGB;
        cinfo.scale_num = (unsigned int)scale_num;
        cinfo.scale_denom = 8;
        jpeg_start_decompress(&cinfo);
        if (w == 0 || h == 0 || x + w > cinfo.output_width || y + h > cinfo.output_height) {
            status = 3;
        } else {
            /* One iMCU column of margin on each side: the crop's edge columns are upsampled as if
             * they were the image's edges, so only columns inside the margin equal a full decode. */
            JDIMENSION margin = 16, i;
            JDIMENSION left = x > margin ? x - margin : 0;
            JDIMENSION right = x + w + margin < cinfo.output_width ? x + w + margin : cinfo.output_width;
            JDIMENSION width = right - left;
            if (width < cinfo.output_width) {
                jpeg_crop_scanline(&cinfo, &left, &width); /* widens to iMCU column boundaries */
            }
            if (y > 0) {
                jpeg_skip_scanlines(&cinfo, y);
            }
            row = malloc((size_t)cinfo.output_width * 3);
            if (row == NULL) {
                status = 1;
                strcpy(err->message, "out of memory");
            }
            for (i = 0; status == 0 && i < h; i++) {
                JSAMPROW rows[1] = {row};
                jpeg_read_scanlines(&cinfo, rows, 1);
                memcpy(out + (size_t)i * w * 3, row + (size_t)(x - left) * 3, (size_t)w * 3);
            }
        }
    }
    free(row);
    jpeg_destroy_decompress(&cinfo); /* also aborts: the rows below the box are never decoded */
    return status;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer data;
    int scale_num;
    unsigned int x, y, w, h;
    PyObject *out;
    struct region_error err;
    int status;
    if (!PyArg_ParseTuple(args, "y*iIIII", &data, &scale_num, &x, &y, &w, &h)) {
        return NULL;
    }
    if (scale_num < 1 || scale_num > 8) {
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "scale_num must be 1..8, got %d", scale_num);
    }
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)w * h * 3);
    if (out == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    err.message[0] = '\0';
    Py_BEGIN_ALLOW_THREADS
    status = decode_box((const unsigned char *)data.buf, (size_t)data.len, scale_num, x, y, w, h,
                        (unsigned char *)PyByteArray_AS_STRING(out), &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (status == 0) {
        return out;
    }
    Py_DECREF(out);
    if (status == 1) {
        return PyErr_Format(Unsupported, "libjpeg: %s", err.message);
    }
    if (status == 2) {
        return PyErr_Format(Unsupported, "CMYK/YCCK JPEG");
    }
    return PyErr_Format(PyExc_ValueError, "box (%u, %u, %u, %u) is outside the image at scale %d/8",
                        x, y, w, h, scale_num);
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, scale_num, x, y, w, h) -> bytearray: box (x, y, w, h) of the JPEG decoded at "
     "scale_num/8, RGB rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region",
                                    "Partial, DCT-scaled JPEG decoding (libjpeg-turbo).", -1, methods};

PyMODINIT_FUNC PyInit__jpeg_region(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Unsupported = PyErr_NewException("kdlab.data._jpeg_region.Unsupported", PyExc_ValueError, NULL);
    if (Unsupported == NULL || PyModule_AddObject(m, "Unsupported", Unsupported) < 0) {
        Py_XDECREF(Unsupported);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "LIBJPEG_TURBO_VERSION", LIBJPEG_TURBO_VERSION_NUMBER);
    return m;
}
